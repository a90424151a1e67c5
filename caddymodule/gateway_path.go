package caddymodule

import (
	"errors"
	"net/url"
	"strings"
)

var (
	errDotSegment    = errors.New("request path has a dot segment")
	errAmbiguousPath = errors.New("request path has a segment that is only a parameter, a control character or an overlong UTF-8 form")
)

// checkPath returns why a request path, as Go decoded it once, must not
// reach an upstream, or nil. Caddy's matchers chose the route for the path
// as they read it; an upstream that reads it otherwise would serve a path
// the route's policy was not chosen for. Every rule applies to the path
// and to the path decoded once more (for upstreams that decode twice):
//
//   - a segment an upstream may resolve as "." or ".." (RFC 3986 §5.2.4),
//     after dropping ";" parameters (Tomcat and other servlet containers
//     treat "..;" as ".."), with "\" as a separator too (Windows servers),
//     unless allowDots;
//   - a segment, other than the last, that is only a ";" parameter:
//     servlet containers drop it and merge the slashes, so /;x/admin is
//     their /admin;
//   - a control character: servers that cut a path at NUL or drop
//     characters would read what is left;
//   - an overlong UTF-8 form (%c0%ae for "."), never valid UTF-8 (RFC 3629
//     §3), which lenient decoders read as the character it spells, and
//     the bytes C0 and C1, which only ever start one.
func checkPath(p string, allowDots bool) error {
	for range 2 {
		for i := 0; i < len(p); i++ {
			if c := p[i]; c < 0x20 || c == 0x7f || isOverlong(p[i:]) {
				return errAmbiguousPath
			}
		}
		// A dot segment starts the path or follows a separator: paths with
		// dots only in names (/app.js) skip the split.
		dots := !allowDots && (strings.HasPrefix(p, ".") || strings.Contains(p, "/.") || strings.Contains(p, `\.`))
		if dots || strings.Contains(p, ";") {
			segs := strings.FieldsFunc(p, func(c rune) bool { return c == '/' || c == '\\' })
			last := !strings.HasSuffix(p, "/") && !strings.HasSuffix(p, `\`)
			for i, seg := range segs {
				name, _, param := strings.Cut(seg, ";")
				switch {
				case !allowDots && (name == "." || name == ".."):
					return errDotSegment
				case param && name == "" && (i < len(segs)-1 || !last):
					return errAmbiguousPath
				}
			}
		}
		if !strings.Contains(p, "%") {
			return nil
		}
		d, err := url.PathUnescape(p)
		if err != nil || d == p {
			return nil
		}
		p = d
	}
	return nil
}

// isOverlong reports whether b starts with the lead bytes of an overlong
// UTF-8 sequence: C0 or C1 (two bytes for what fits in one), whatever
// follows, since decoders that drop what they cannot read make C0 2E a
// "."; E0 80-9F (three bytes for what fits in two) and F0 80-8F (four for
// what fits in three). Latin-1 text ("voilà" ends in E0) passes.
func isOverlong(b string) bool {
	if len(b) > 0 && (b[0] == 0xc0 || b[0] == 0xc1) {
		return true
	}
	if len(b) < 2 || b[1] < 0x80 || b[1] > 0xbf {
		return false
	}
	switch b[0] {
	case 0xe0:
		return b[1] <= 0x9f
	case 0xf0:
		return b[1] <= 0x8f
	}
	return false
}
