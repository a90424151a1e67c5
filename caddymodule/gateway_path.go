package caddymodule

import (
	"errors"
	"net/url"
	"strings"
)

var errDotSegment = errors.New("request path has a dot segment")

// hasDotSegment reports whether a request path, as Go decoded it once,
// has a segment that an upstream may resolve as "." or ".." (RFC 3986
// §5.2.4) where Caddy's matchers did not: after dropping ";" parameters
// (Tomcat and other servlet containers treat "..;" as ".."), with "\" as a
// separator too (Windows servers), and decoded once more (for upstreams
// that decode twice).
func hasDotSegment(p string) bool {
	for range 2 {
		if !strings.Contains(p, ".") && !strings.Contains(p, "%") {
			return false
		}
		for seg := range strings.FieldsFuncSeq(p, func(c rune) bool { return c == '/' || c == '\\' }) {
			seg, _, _ = strings.Cut(seg, ";")
			if seg == "." || seg == ".." {
				return true
			}
		}
		d, err := url.PathUnescape(p)
		if err != nil || d == p {
			return false
		}
		p = d
	}
	return false
}
