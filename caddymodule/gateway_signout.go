package caddymodule

import (
	"crypto/subtle"
	"net/http"
	"net/url"
	"strings"
	"time"

	"go.uber.org/zap"
)

// signOutTokenName binds sign-out tokens to their use: the session codec
// authenticates the name with the value, so no cookie of the gateway
// passes as a token, nor a token as a cookie.
func (g *Gateway) signOutTokenName() string {
	return g.cookieName + "_sign_out"
}

// signOutToken is the token of the sign-out form: the session's random
// id, sealed (encrypted and authenticated) with the session keys. Only
// the session's own pages can show it: a page of another site can neither
// read the form (no CORS, no framing) nor make a token for a session whose
// id it does not know.
func (g *Gateway) signOutToken(s *session) (string, error) {
	return g.codec.encode(g.signOutTokenName(), s.ID)
}

// validSignOutToken reports whether token was made for session s.
func (g *Gateway) validSignOutToken(s *session, token string) bool {
	if token == "" || s.ID == "" {
		return false
	}
	var id string
	if g.codec.decode(g.signOutTokenName(), token, &id) != nil {
		return false
	}
	return subtle.ConstantTimeCompare([]byte(id), []byte(s.ID)) == 1
}

// writeSignOutPage asks the user of session s to confirm the sign-out with
// a button that posts the form's token; note comes before the question.
func (g *Gateway) writeSignOutPage(w http.ResponseWriter, status int, s *session, note string) {
	token, err := g.signOutToken(s)
	if err != nil {
		g.logger.Error("encoding the sign-out token", zap.Error(err))
		writePage(w, http.StatusInternalServerError, "Sign out", "The sign-out could not be prepared.", "", "")
		return
	}
	claims := s.userClaims()
	who := claimString(claims["email"])
	if who == "" {
		who = claimString(claims["preferred_username"])
	}
	if who == "" {
		who = s.Subject
	}
	renderPage(w, status, map[string]string{
		"Title":   "Sign out",
		"Message": note + "You are signed in as " + who + ". Sign out?",
		"Form":    g.SignOutPath,
		"Token":   token,
		"Button":  "Sign out",
	})
}

// signedOutStateName binds the state of the way back from a sign-out to
// its use, as signOutTokenName does for the form's token.
func (g *Gateway) signedOutStateName() string {
	return g.cookieName + "_signed_out"
}

// signedOutLifetime is how long the way back from a sign-out shows the
// signed-out page: the time to sign out at the provider.
const signedOutLifetime = 10 * time.Minute

// signedOutState is the state sent along the way back from a sign-out:
// the time, sealed with the session keys, so that only a sign-out of this
// gateway shows its signed-out page. "" if it cannot be made: the way back
// then leads to a login, as it did before there was a page.
func (g *Gateway) signedOutState() string {
	v, err := g.codec.encode(g.signedOutStateName(), time.Now().Unix())
	if err != nil {
		g.logger.Warn("encoding the signed-out state", zap.Error(err))
		return ""
	}
	return v
}

// validSignedOutState reports whether state is a recent signedOutState.
func (g *Gateway) validSignedOutState(state string) bool {
	if state == "" {
		return false
	}
	var at int64
	if g.codec.decode(g.signedOutStateName(), state, &at) != nil {
		return false
	}
	return time.Since(time.Unix(at, 0)) < signedOutLifetime
}

// writeSignedOutPage says that the user signed out, with a way to sign in
// again to the page it was shown at.
func (g *Gateway) writeSignedOutPage(w http.ResponseWriter, r *http.Request) {
	// The way back from the provider, which has ended its session: the
	// browser may now forget the site's cookies and cached pages (W3C
	// Clear Site Data §3.1; cookies of the whole registrable domain).
	w.Header().Set("Clear-Site-Data", `"cache", "cookies"`)
	writePage(w, http.StatusOK, "Signed out", "You have signed out.",
		g.SignInPath+"?rd="+url.QueryEscape(r.URL.Path), "Sign in again")
}

// addQuery returns target with name=value added to its query.
func addQuery(target, name, value string) string {
	sep := "?"
	if strings.Contains(target, "?") {
		sep = "&"
	}
	return target + sep + url.QueryEscape(name) + "=" + url.QueryEscape(value)
}
