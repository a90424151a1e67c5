package caddymodule

// The answers of a request that does not pass: no valid login
// (unauthenticated), a login the policy refuses (forbidden), a provider
// that cannot be reached (providerDown), and the small pages and JSON
// bodies they are written with. A request passes through the gateway's
// rooms in order: identity (gateway_identity.go), these answers, the
// login flow (gateway_flow.go), the cookie codec (gateway_session.go).

import (
	"encoding/json"
	"html/template"
	"net/http"
	"net/url"

	"go.uber.org/zap"

	"github.com/authgate/authgate/idp/dpop"
)

// unauthenticated answers a request without a valid login: a browser
// navigation goes to log in, anything else gets 401 with a JSON body that
// carries the login URL, since a script cannot follow a cross-origin
// redirect. bearerErr is the error code of a bad bearer token, if any. It
// returns the outcome of the answer, for the metrics.
func (g *Gateway) unauthenticated(w http.ResponseWriter, r *http.Request, bearerErr string) outcome {
	if g.browserMode && isNavigation(r) && bearerErr == "" {
		if g.validSignedOutState(r.URL.Query().Get("state")) {
			// Back from signing out, at a page of ours: a new login
			// would look as if the sign-out had failed.
			g.writeSignedOutPage(w, r)
			return outcomeUnauthenticated
		}
		return g.startLogin(w, r, safeReturnURL(r.URL.RequestURI()))
	}
	w.Header().Set("WWW-Authenticate", bearerChallenge(r, bearerErr))
	if g.acceptBearer && bearerErr == "" {
		// RFC 9449 §7.1: DPoP tokens are accepted too, with these
		// algorithms.
		w.Header().Add("WWW-Authenticate", dpop.Challenge(r.Host, "", ""))
	}
	body := map[string]string{"error": "unauthorized", "error_description": "authentication required"}
	if bearerErr != "" {
		body["error"] = bearerErr
		body["error_description"] = "the bearer token is invalid or expired"
	}
	if g.acceptCookie {
		body["login_url"] = requestOrigin(r) + g.SignInPath + "?rd=" + url.QueryEscape(safeReturnURL(r.URL.RequestURI()))
	}
	writeJSON(w, http.StatusUnauthorized, body)
	return outcomeUnauthenticated
}

// bearerChallenge is the WWW-Authenticate value of RFC 6750 §3, with
// the error code errCode if there is one (none when the request had no
// token, §3.1).
func bearerChallenge(r *http.Request, errCode string) string {
	challenge := `Bearer realm="` + r.Host + `"`
	if errCode != "" {
		challenge += `, error="` + errCode + `"`
	}
	return challenge
}

// forbidden answers a logged-in user whom the allow rules refuse.
func (g *Gateway) forbidden(w http.ResponseWriter, r *http.Request, id *identity) outcome {
	who := id.email
	if who == "" {
		who = claimString(id.claims["preferred_username"])
	}
	if who == "" {
		who = id.subject
	}
	if ce := g.logger.Check(zap.InfoLevel, "access denied by policy"); ce != nil {
		ce.Write(zap.String("sub", id.subject), zap.String("path", r.URL.Path))
	}
	if id.bearer {
		// RFC 6750 §3.1: the token is good but does not reach this; with
		// scope rules, the scope of one that would let it through.
		challenge := bearerChallenge(r, "insufficient_scope")
		if g.scopeNeeded != "" {
			challenge += `, scope="` + g.scopeNeeded + `"`
		}
		w.Header().Set("WWW-Authenticate", challenge)
	}
	if !isNavigation(r) {
		writeJSON(w, http.StatusForbidden, map[string]string{"error": "forbidden", "error_description": "signed in as " + who + ", who may not access this"})
		return outcomeForbidden
	}
	link := ""
	if g.acceptCookie {
		link = g.SignOutPath
	}
	writePage(w, http.StatusForbidden, "Access denied", "You are signed in as "+who+", who may not access this page.", link, "Sign out")
	return outcomeForbidden
}

// providerDown answers when the provider cannot be reached.
func (g *Gateway) providerDown(w http.ResponseWriter, r *http.Request, err error) outcome {
	if ce := g.logger.Check(zap.ErrorLevel, "identity provider unavailable"); ce != nil {
		ce.Write(zap.String("issuer", g.Issuer), zap.Error(err))
	}
	if isNavigation(r) {
		writePage(w, http.StatusBadGateway, "Sign-in unavailable", "The identity provider cannot be reached right now. Please try again in a moment.", "", "")
		return outcomeProviderUnreachable
	}
	writeJSON(w, http.StatusBadGateway, map[string]string{"error": "provider_unavailable", "error_description": "the identity provider cannot be reached"})
	return outcomeProviderUnreachable
}

var pageTemplate = template.Must(template.New("page").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{.Title}}</title>
<style>body{font-family:system-ui,sans-serif;background:#f4f5f7;margin:0}main{max-width:32rem;margin:12vh auto;background:#fff;padding:2rem;border-radius:8px;box-shadow:0 1px 4px rgba(0,0,0,.15)}h1{font-size:1.4rem;margin-top:0}</style>
</head><body><main><h1>{{.Title}}</h1><p id="message">{{.Message}}</p>{{if .Link}}<p><a id="action" href="{{.Link}}">{{.LinkText}}</a></p>{{end}}
{{- if .Form}}<form method="post" action="{{.Form}}"><input type="hidden" name="token" value="{{.Token}}"><p><button id="sign-out" type="submit" autofocus>{{.Button}}</button></p></form>{{end}}</main></body></html>
`))

// writePage writes a small HTML page; link, if set, is offered as the way
// on, labelled text.
func writePage(w http.ResponseWriter, status int, title, msg, link, text string) {
	renderPage(w, status, map[string]string{"Title": title, "Message": msg, "Link": link, "LinkText": text})
}

// renderPage writes pageTemplate with data, uncached, unframed, scriptless.
func renderPage(w http.ResponseWriter, status int, data map[string]string) {
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'")
	w.WriteHeader(status)
	pageTemplate.Execute(w, data)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}
