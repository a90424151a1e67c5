package idp

import (
	"errors"
	"mime"
	"net/http"
	"strings"

	"github.com/authgate/authgate/idp/dpop"
)

// serveUserinfo answers with the claims of the access token's user, as its
// scopes release them (OpenID Connect Core §5.3).
func (p *Provider) serveUserinfo(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead && r.Method != http.MethodPost {
		w.Header().Set("Allow", "GET, HEAD, POST")
		writeError(w, http.StatusMethodNotAllowed, oauthErr(ErrInvalidRequest, "use GET or POST"))
		return
	}
	fail := p.bearerError
	raw, isDPoP := userinfoDPoPToken(r)
	if isDPoP {
		// RFC 9449 §7.1: the DPoP scheme, whose errors are DPoP
		// challenges.
		fail = p.dpopError
		if raw == "" {
			fail(w, r, http.StatusBadRequest, oauthErr(ErrInvalidRequest, "the DPoP credentials are empty"))
			return
		}
	} else {
		var e *Error
		if raw, e = bearerToken(w, r); e != nil {
			p.bearerError(w, r, http.StatusBadRequest, e)
			return
		}
	}
	if raw == "" || raw == notBearer {
		// RFC 6750 §3.1, RFC 9449 §7.1: no error code when the request
		// carried no token; both schemes are offered.
		w.Header().Set("WWW-Authenticate", `Bearer realm="`+p.issuer+`"`)
		w.Header().Add("WWW-Authenticate", dpop.Challenge(p.issuer, "", ""))
		w.Header().Set("Cache-Control", "no-store")
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	claims, err := p.verifyAccessToken(raw)
	if err != nil {
		fail(w, r, http.StatusUnauthorized, &Error{Code: ErrInvalidToken, Description: "the access token is invalid or expired", Cause: err})
		return
	}
	if oe := p.checkResourceDPoP(r, isDPoP, raw, claims); oe != nil {
		if oe.Code == ErrTemporarilyUnavailable {
			p.log.ErrorContext(r.Context(), "checking a DPoP proof", "error", oe.Cause)
			writeError(w, http.StatusServiceUnavailable, oe)
			return
		}
		if !isDPoP {
			// A bound token sent as Bearer: the DPoP challenge says how
			// to present it (RFC 9449 §7.2).
			p.dpopError(w, r, http.StatusUnauthorized, oe)
			return
		}
		fail(w, r, http.StatusUnauthorized, oe)
		return
	}
	if revoked, err := p.isRevoked(r, claims); err != nil {
		p.log.ErrorContext(r.Context(), "checking revocation", "error", err)
		writeError(w, http.StatusServiceUnavailable, oauthErr(ErrServerError, "revocation could not be checked"))
		return
	} else if revoked {
		fail(w, r, http.StatusUnauthorized, oauthErr(ErrInvalidToken, "the access token was revoked"))
		return
	}
	scopes := splitScope(claims.Scope)
	if !p.hasScope(claims.Scope, "openid") {
		fail(w, r, http.StatusForbidden, oauthErr(ErrInsufficientScope, "the access token lacks the openid scope"))
		return
	}
	u := p.activeUser(claims.Subject)
	if u == nil {
		fail(w, r, http.StatusUnauthorized, oauthErr(ErrInvalidToken, "the user no longer exists or is disabled"))
		return
	}
	writeJSON(w, http.StatusOK, p.userClaims(u, scopes))
}

// isRevoked reports whether an access token was revoked, itself (by jti)
// or with its refresh token family.
func (p *Provider) isRevoked(r *http.Request, c *accessClaims) (bool, error) {
	keys := []string{revokedKey(c.ID)}
	if c.GrantID != "" {
		keys = append(keys, revokedFamilyKey(c.GrantID))
	}
	for _, k := range keys {
		_, err := p.store.Get(r.Context(), k)
		switch {
		case err == nil:
			return true, nil
		case !errors.Is(err, ErrNotFound):
			return false, err
		}
	}
	return false, nil
}

// notBearer marks an Authorization header of another scheme.
const notBearer = "\x00not bearer"

// bearerToken returns the access token from the Authorization header or,
// for a form POST, the access_token body parameter (RFC 6750 §2.1, §2.2);
// a request may use only one of them.
func bearerToken(w http.ResponseWriter, r *http.Request) (string, *Error) {
	var token string
	if h := r.Header.Get("Authorization"); h != "" {
		scheme, cred, _ := strings.Cut(h, " ")
		if !strings.EqualFold(scheme, "Bearer") {
			// RFC 6750 §3.1: another scheme is no token of ours; the
			// answer is the bare challenge.
			return notBearer, nil
		}
		if strings.TrimSpace(cred) == "" {
			return "", oauthErr(ErrInvalidRequest, "the Bearer credentials are empty")
		}
		token = strings.TrimSpace(cred)
	}
	if r.Method == http.MethodPost {
		if ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); ct == "application/x-www-form-urlencoded" {
			r.Body = http.MaxBytesReader(w, r.Body, maxFormBytes)
			if err := r.ParseForm(); err != nil {
				return "", oauthErr(ErrInvalidRequest, "the body could not be parsed")
			}
			if vals := r.PostForm["access_token"]; len(vals) > 0 {
				if token != "" || len(vals) > 1 {
					return "", oauthErr(ErrInvalidRequest, "give the access token once")
				}
				token = vals[0]
			}
		}
	}
	return token, nil
}

// bearerError answers per RFC 6750 §3 with a WWW-Authenticate challenge.
func (p *Provider) bearerError(w http.ResponseWriter, r *http.Request, status int, e *Error) {
	if e.Cause != nil {
		p.log.InfoContext(r.Context(), "bearer token refused", "error_code", e.Code, "error", e.Cause)
	}
	w.Header().Set("WWW-Authenticate", `Bearer realm="`+p.issuer+`", error="`+e.Code+`", error_description="`+cleanDescription(e.Description)+`"`)
	writeError(w, status, e)
}
