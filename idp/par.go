package idp

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// Pushed authorization requests (RFC 9126): a client posts the parameters
// of an authorization request to PathPushedAuthorization, authenticated as
// at the token endpoint, and gets a request_uri that stands for them; it
// then sends the browser to the authorization endpoint with client_id and
// request_uri only. The parameters never travel through the browser, so
// they can be neither read nor changed there, and the client's credentials
// vouch for them.
//
// State, in the Store: par/<hash of client_id and request_uri>, the pushed
// parameters, taken by the one authorization request that uses them. The
// client_id is part of the key, so that another client's request_uri is
// not found, and trying it does not use it up.

// PathPushedAuthorization is the pushed authorization request endpoint
// (RFC 9126 §2).
const PathPushedAuthorization = "/connect/par"

// requestURIPrefix starts every request_uri the endpoint issues: the URN
// namespace of RFC 9126 §2.2. A request_uri of any other form is a request
// object by reference (RFC 9101 §5.2), which the provider does not fetch.
const requestURIPrefix = "urn:ietf:params:oauth:request_uri:"

// PushedRequestLifetime is how long a request_uri can be used: long enough
// for the client to send the browser on, short because it is one sign-in's
// (RFC 9126 §2.2 suggests 5 to 600 seconds; §7.3).
const PushedRequestLifetime = 60 * time.Second

// pushedRequest is what a request_uri stands for.
type pushedRequest struct {
	ClientID string     `json:"client_id"`
	Params   url.Values `json:"params"`
	Expires  int64      `json:"exp"`
}

// parResponse is the pushed authorization response (RFC 9126 §2.2).
type parResponse struct {
	RequestURI string `json:"request_uri"`
	ExpiresIn  int64  `json:"expires_in"`
}

// clientAuthParams are the parameters of client authentication, which a
// pushed request carries only to authenticate the client (RFC 9126 §2.1):
// they are no part of the authorization request and are not kept.
var clientAuthParams = []string{"client_secret", "client_assertion", "client_assertion_type"}

func pushedKey(clientID, requestURI string) string {
	return "par/" + hashKey(clientID+"\x00"+requestURI)
}

// requiresPAR reports whether c may send authorization requests only by
// pushing them (RFC 9126 §5, §6).
func (p *Provider) requiresPAR(c *client) bool {
	return p.requirePAR || c.RequirePushedAuthorizationRequests
}

// servePushedAuthorization is the pushed authorization request endpoint
// (RFC 9126 §2): POST only, the client authenticated as at the token
// endpoint, the parameters checked as the authorization endpoint checks
// them, errors as JSON (§2.3).
func (p *Provider) servePushedAuthorization(w http.ResponseWriter, r *http.Request) {
	treq, oe := p.readBackChannel(w, r)
	if oe != nil {
		return
	}
	treq.deferJTI = true
	c, oe := p.authenticateClient(treq)
	if oe != nil {
		p.tokenError(w, r, oe)
		return
	}
	form := make(url.Values, len(treq.form))
	for name, vals := range treq.form {
		form[name] = vals
	}
	for _, name := range clientAuthParams {
		delete(form, name)
	}
	switch {
	case form.Get("client_id") == "":
		// §2.1: client_id is required here as at the authorization
		// endpoint, whichever way the client authenticates.
		p.tokenError(w, r, oauthErr(ErrInvalidRequest, "client_id is required"))
		return
	case form.Get("client_id") != c.ID:
		p.tokenError(w, r, oauthErr(ErrInvalidRequest, "client_id is not the authenticated client"))
		return
	case form.Has("request_uri"):
		// §2.1: a request_uri cannot be pushed.
		p.tokenError(w, r, oauthErr(ErrInvalidRequest, "request_uri must not be pushed"))
		return
	}
	if _, _, err := p.parseAuthorizeRequest(form); err != nil {
		var pe *pageError
		if errors.As(err, &pe) {
			// §2.3: what the authorization endpoint shows on a page,
			// rather than redirect, is invalid_request here.
			p.tokenError(w, r, oauthErr(ErrInvalidRequest, pe.msg))
			return
		}
		p.tokenError(w, r, err.(*Error))
		return
	}
	if hint := form.Get("id_token_hint"); hint != "" {
		if _, ok := p.idTokenHint(hint); !ok {
			p.tokenError(w, r, oauthErr(ErrInvalidRequest, "id_token_hint is not an ID token of this provider"))
			return
		}
	}
	if oe := p.pushedDPoP(w, r, form); oe != nil {
		p.tokenError(w, r, oe)
		return
	}
	if oe := p.spendAssertion(treq); oe != nil {
		p.tokenError(w, r, oe)
		return
	}
	requestURI := requestURIPrefix + p.randomString(32)
	data, _ := json.Marshal(pushedRequest{ClientID: c.ID, Params: form, Expires: p.now().Add(PushedRequestLifetime).Unix()})
	if err := p.store.Put(r.Context(), pushedKey(c.ID, requestURI), data, PushedRequestLifetime); err != nil {
		p.tokenError(w, r, unavailable("the request could not be stored; try again shortly", err))
		return
	}
	p.log.InfoContext(r.Context(), "authorization request pushed", "client_id", c.ID)
	writeJSON(w, http.StatusCreated, parResponse{RequestURI: requestURI, ExpiresIn: int64(PushedRequestLifetime / time.Second)})
}

// isPushed reports whether the authorization request q refers to a pushed
// request by a request_uri of ours.
func isPushed(q url.Values) bool {
	for _, v := range q["request_uri"] {
		if strings.HasPrefix(v, requestURIPrefix) {
			return true
		}
	}
	return false
}

// takePushed returns the parameters pushed for the request_uri of the
// authorization request q, taking them from the store so that they serve
// once (RFC 9126 §4). Only client_id and request_uri of q count: the
// pushed parameters are the request, whatever else the URL says. A
// request_uri that is unknown, used, expired or another client's gets an
// error page: the redirect URI of the request is known only from the
// pushed parameters, so there is none to send the error to.
func (p *Provider) takePushed(r *http.Request, q url.Values) (url.Values, *pageError) {
	q = params(q)
	for _, name := range []string{"client_id", "request_uri"} {
		if len(q[name]) > 1 {
			return nil, &pageError{status: http.StatusBadRequest, msg: "The parameter " + name + " was given more than once."}
		}
	}
	clientID := q.Get("client_id")
	if clientID == "" {
		// RFC 9101 §5: client_id is required beside request_uri.
		return nil, &pageError{status: http.StatusBadRequest, msg: "The request has no client_id."}
	}
	if p.clients[clientID] == nil {
		return nil, &pageError{status: http.StatusBadRequest, msg: "The client is not registered with this provider."}
	}
	gone := &pageError{status: http.StatusBadRequest,
		msg: "This sign-in request was already used, has expired, or is not for this application. Go back to the application and sign in again."}
	data, err := p.store.Take(r.Context(), pushedKey(clientID, q.Get("request_uri")))
	switch {
	case errors.Is(err, ErrNotFound):
		p.log.InfoContext(r.Context(), "authorize: request_uri is unknown, used or expired", "client_id", clientID)
		return nil, gone
	case err != nil:
		p.log.ErrorContext(r.Context(), "taking pushed authorization request", "client_id", clientID, "error", err)
		return nil, &pageError{status: http.StatusServiceUnavailable, msg: "The sign-in request could not be read. Go back to the application and try again shortly."}
	}
	var pr pushedRequest
	if json.Unmarshal(data, &pr) != nil || pr.ClientID != clientID || p.now().Unix() > pr.Expires {
		p.log.InfoContext(r.Context(), "authorize: request_uri is expired or not the client's", "client_id", clientID)
		return nil, gone
	}
	return pr.Params, nil
}
