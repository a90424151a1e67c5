package idp

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"slices"
	"time"
)

// consentTTL is how long a remembered consent lasts.
const consentTTL = 365 * 24 * time.Hour

// scopeDescriptions tell the user what a scope gives away.
var scopeDescriptions = map[string]string{
	"openid":           "Your user identifier",
	"profile":          "Your profile: name, username, website",
	"email":            "Your email address",
	"address":          "Your postal address",
	"phone":            "Your phone number",
	"groups":           "The groups you belong to",
	scopeOfflineAccess: "Access while you are away (offline access)",
}

type consentPage struct {
	Action   string
	Request  string
	CSRF     string
	ClientID string
	Scopes   []scopeItem
}

type scopeItem struct {
	Name        string
	Description string
}

func consentKey(subject, clientID string) string {
	return "consent/" + hashKey(subject+"\x00"+clientID)
}

// afterLogin issues the code, or first asks for consent when the client
// requires it and the user has not already given it for these scopes.
func (p *Provider) afterLogin(w http.ResponseWriter, r *http.Request, req *authRequest, c *client, sess *session) {
	// prompt=consent asks any client's user (OpenID Connect Core §3.1.2.1).
	if slices.Contains(req.Prompt, "consent") || c.RequireConsent && !p.hasConsent(r.Context(), sess.Subject, c.ID, req.Scopes) {
		if slices.Contains(req.Prompt, "none") {
			p.redirectWithError(w, r, req, oauthErr(ErrConsentRequired, "the user has not consented"))
			return
		}
		forConsent := *req
		forConsent.ConsentSID = sess.SID
		sealed, err := p.encodeAuthRequest(&forConsent)
		if err != nil {
			p.log.ErrorContext(r.Context(), "sealing consent request", "error", err)
			p.renderError(w, r, &pageError{status: http.StatusInternalServerError, msg: "The consent page could not be shown."})
			return
		}
		w.Header().Set("Cache-Control", "no-store")
		http.Redirect(w, r, p.base+PathConsent+"?"+url.Values{"request": {sealed}}.Encode(), redirectStatus(r))
		return
	}
	p.finishAuthorize(w, r, req, c, sess)
}

func (p *Provider) hasConsent(ctx context.Context, subject, clientID string, scopes []string) bool {
	data, err := p.store.Get(ctx, consentKey(subject, clientID))
	if err != nil {
		return false
	}
	var granted []string
	if json.Unmarshal(data, &granted) != nil {
		return false
	}
	return !slices.ContainsFunc(scopes, func(s string) bool { return !slices.Contains(granted, s) })
}

// serveConsent shows the requested scopes (GET) and takes the user's
// decision (POST): deny sends access_denied to the client.
func (p *Provider) serveConsent(w http.ResponseWriter, r *http.Request) {
	var raw string
	switch r.Method {
	case http.MethodGet, http.MethodHead:
		raw = r.URL.Query().Get("request")
	case http.MethodPost:
		r.Body = http.MaxBytesReader(w, r.Body, maxFormBytes)
		if err := r.ParseForm(); err != nil {
			p.renderError(w, r, &pageError{status: http.StatusBadRequest, msg: "The form could not be read."})
			return
		}
		raw = r.PostForm.Get("request")
	default:
		w.Header().Set("Allow", "GET, HEAD, POST")
		p.renderError(w, r, &pageError{status: http.StatusMethodNotAllowed, msg: "Use GET or POST."})
		return
	}
	req, err := p.decodeAuthRequest(raw)
	if err == nil && req.ConsentSID == "" {
		err = errors.New("idp: not a consent request") // one sealed for the login page
	}
	if err != nil {
		p.renderError(w, r, &pageError{status: http.StatusBadRequest, msg: "This consent link is invalid or has expired. Go back to the application and sign in again."})
		return
	}
	c := p.clients[req.ClientID]
	sess := p.readSession(r)
	if sess == nil || subtle.ConstantTimeCompare([]byte(sess.SID), []byte(req.ConsentSID)) != 1 {
		// Signed out, or another sign-in since: the request goes through
		// the login page's checks again.
		req.ConsentSID = ""
		p.redirectToLogin(w, r, req)
		return
	}
	if r.Method != http.MethodPost {
		page := consentPage{Action: p.base + PathConsent, Request: raw, CSRF: p.csrfToken(w, r), ClientID: c.ID}
		for _, s := range req.Scopes {
			d := scopeDescriptions[s]
			if d == "" {
				d = "Access to the API scope " + s
			}
			page.Scopes = append(page.Scopes, scopeItem{Name: s, Description: d})
		}
		p.render(w, r, http.StatusOK, "consent.html", page)
		return
	}
	if err := p.checkCSRF(r, r.PostForm.Get("csrf_token")); err != nil {
		p.log.InfoContext(r.Context(), "consent form refused", "reason", err)
		p.renderError(w, r, &pageError{status: http.StatusBadRequest, msg: "Your session expired. Go back to the application and try again."})
		return
	}
	if r.PostForm.Get("decision") != "allow" {
		p.log.InfoContext(r.Context(), "consent denied", "sub", sess.Subject, "client_id", c.ID)
		p.emitRequest(r, Event{Type: EventConsent, Outcome: OutcomeDenied, Subject: sess.Subject, ClientID: c.ID, SID: sess.SID})
		p.redirectWithError(w, r, req, oauthErr(ErrAccessDenied, "the user denied the request"))
		return
	}
	if r.PostForm.Get("remember") != "" {
		granted := slices.Clone(req.Scopes)
		if data, err := p.store.Get(r.Context(), consentKey(sess.Subject, c.ID)); err == nil {
			var before []string
			if json.Unmarshal(data, &before) == nil {
				for _, s := range before {
					if !slices.Contains(granted, s) {
						granted = append(granted, s)
					}
				}
			}
		}
		data, _ := json.Marshal(granted)
		if err := p.store.Put(r.Context(), consentKey(sess.Subject, c.ID), data, consentTTL); err != nil {
			p.log.ErrorContext(r.Context(), "remembering consent", "error", err)
		}
	}
	p.log.InfoContext(r.Context(), "consent given", "sub", sess.Subject, "client_id", c.ID, "remembered", r.PostForm.Get("remember") != "")
	p.emitRequest(r, Event{Type: EventConsent, Outcome: OutcomeGranted, Subject: sess.Subject, ClientID: c.ID, SID: sess.SID})
	p.finishAuthorize(w, r, req, c, sess)
}
