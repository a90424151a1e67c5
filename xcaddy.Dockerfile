# Caddy with authgate's modules, built by xcaddy on the official images.
#
# From a checkout of this repository, building the code in it:
#
#	docker build -f xcaddy.Dockerfile -t caddy-authgate .
#
# From a published version of authgate instead (the checkout is then only
# the build context):
#
#	docker build -f xcaddy.Dockerfile --build-arg AUTHGATE_VERSION=v0.1.0 -t caddy-authgate .
#
# Another Caddy version than the builder image's own: --build-arg
# CADDY_BUILD_VERSION=v2.11.9 (not CADDY_VERSION: the image's ENV of that
# name would win over a build argument).
#
# The result runs as the official caddy image does, for example:
#
#	docker run --rm -p 9000:9000 -e DEMO_APP_SECRET=change-me \
#		-v "$PWD/Caddyfile:/etc/caddy/Caddyfile" -v caddy_data:/data caddy-authgate
#
# Keep /data on a volume: the provider's signing and cookie keys live in
# Caddy's storage there, and new keys would log everyone out.

FROM caddy:2-builder AS builder

ARG CADDY_BUILD_VERSION=
ARG AUTHGATE_VERSION=

# authgate's go.mod may ask for a newer Go than the image has; let the go
# command fetch that toolchain rather than fail.
ENV GOTOOLCHAIN=auto

COPY . /src

# --with adds the package to Caddy's imports. A local replacement is a Go
# module replacement, so it names the module root, github.com/authgate/authgate,
# not the caddymodule package; --replace writes it without importing the root
# (a module root with no Go files of its own cannot be imported).
RUN set -eu; \
	if [ -n "$AUTHGATE_VERSION" ]; then \
		xcaddy build $CADDY_BUILD_VERSION --output /usr/bin/caddy \
			--with "github.com/authgate/authgate/caddymodule@$AUTHGATE_VERSION"; \
	else \
		xcaddy build $CADDY_BUILD_VERSION --output /usr/bin/caddy \
			--with github.com/authgate/authgate/caddymodule \
			--replace github.com/authgate/authgate=/src; \
	fi

FROM caddy:2

COPY --from=builder /usr/bin/caddy /usr/bin/caddy
