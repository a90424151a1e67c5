package caddymodule

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"

	"github.com/caddyserver/caddy/v2"

	"github.com/authgate/authgate/idp"
)

func init() {
	caddy.RegisterModule(ProviderAdmin{})
}

// ProviderAdmin is the admin API of the running oidc_provider modules, on
// Caddy's admin endpoint (loaded whenever the admin endpoint is on; it has
// no configuration). A user is named by subject or username; `issuer`
// picks the provider when several run (default: the only one).
//
//	GET  /authgate/users/{user}/sessions[?issuer=]
//	     the user's live provider sessions and refresh token families
//	     (client, created, last used, expires; never a token)
//	POST /authgate/users/{user}/logout[?issuer=]
//	     ends every provider session of the user (back-channel logout to
//	     the clients that registered for it, gateways included) and
//	     revokes all of the user's refresh token families
//	POST /authgate/clients/{client_id}/revoke[?sub=][&issuer=]
//	     revokes the client's refresh token families of one user, or of
//	     every configured user without sub
//
// Answers are JSON; errors are Caddy's `{"error": "..."}`: 404 for an
// unknown user, client, issuer or path, 405 for a wrong method, 400 when
// several providers run and no issuer is given, 503 when the provider's
// store fails or its keys are not loaded yet.
type ProviderAdmin struct{}

// CaddyModule returns the Caddy module information.
func (ProviderAdmin) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "admin.api.authgate",
		New: func() caddy.Module { return new(ProviderAdmin) },
	}
}

// Routes returns the admin API's one route; the handler splits the rest
// of the path itself, so that its errors are JSON too.
func (ProviderAdmin) Routes() []caddy.AdminRoute {
	return []caddy.AdminRoute{{Pattern: "/authgate/", Handler: caddy.AdminHandlerFunc(serveProviderAdmin)}}
}

// runningProviders are the provisioned oidc_provider modules by issuer,
// for the admin API: a provider registers in Provision and leaves in
// Cleanup. During a reload the new configuration's provider registers
// before the old one leaves; the newest of an issuer is the one served.
var runningProviders = struct {
	sync.Mutex
	byIssuer map[string][]*liveProvider
}{byIssuer: make(map[string][]*liveProvider)}

func registerProvider(issuer string, lp *liveProvider) {
	runningProviders.Lock()
	defer runningProviders.Unlock()
	runningProviders.byIssuer[issuer] = append(runningProviders.byIssuer[issuer], lp)
}

func unregisterProvider(issuer string, lp *liveProvider) {
	runningProviders.Lock()
	defer runningProviders.Unlock()
	list := runningProviders.byIssuer[issuer]
	for i, e := range list {
		if e == lp {
			list = append(list[:i:i], list[i+1:]...)
			break
		}
	}
	if len(list) == 0 {
		delete(runningProviders.byIssuer, issuer)
	} else {
		runningProviders.byIssuer[issuer] = list
	}
}

// findProvider returns the running provider of issuer, or the only one
// when issuer is empty.
func findProvider(issuer string) (*idp.Provider, error) {
	runningProviders.Lock()
	var lp *liveProvider
	switch {
	case issuer != "":
		if list := runningProviders.byIssuer[issuer]; len(list) > 0 {
			lp = list[len(list)-1]
		}
	case len(runningProviders.byIssuer) == 1:
		for _, list := range runningProviders.byIssuer {
			lp = list[len(list)-1]
		}
	case len(runningProviders.byIssuer) > 1:
		runningProviders.Unlock()
		return nil, apiError(http.StatusBadRequest, errors.New("several oidc_provider issuers run: choose one with ?issuer="))
	}
	runningProviders.Unlock()
	if lp == nil {
		if issuer == "" {
			return nil, apiError(http.StatusNotFound, errors.New("no oidc_provider runs"))
		}
		return nil, apiError(http.StatusNotFound, fmt.Errorf("no oidc_provider runs for issuer %q", issuer))
	}
	p := lp.Load()
	if p == nil {
		return nil, apiError(http.StatusServiceUnavailable, errors.New("the provider's keys are not loaded yet"))
	}
	return p, nil
}

func serveProviderAdmin(w http.ResponseWriter, r *http.Request) error {
	var parts []string
	for _, seg := range strings.Split(strings.TrimPrefix(r.URL.EscapedPath(), "/authgate/"), "/") {
		s, err := url.PathUnescape(seg)
		if err != nil || s == "" {
			return apiError(http.StatusNotFound, errors.New("not found"))
		}
		parts = append(parts, s)
	}
	if len(parts) != 3 {
		return apiError(http.StatusNotFound, errors.New("not found"))
	}
	q := r.URL.Query()
	ctx := r.Context()
	switch kind, name, action := parts[0], parts[1], parts[2]; {
	case kind == "users" && action == "sessions":
		if err := allow(w, r, http.MethodGet); err != nil {
			return err
		}
		p, err := findProvider(q.Get("issuer"))
		if err != nil {
			return err
		}
		sessions, err := p.UserSessions(ctx, name)
		if err != nil {
			return adminError(err)
		}
		families, err := p.UserFamilies(ctx, name)
		if err != nil {
			return adminError(err)
		}
		return writeAdminJSON(w, map[string]any{"user": name, "sessions": sessions, "refresh_families": families})

	case kind == "users" && action == "logout":
		if err := allow(w, r, http.MethodPost); err != nil {
			return err
		}
		p, err := findProvider(q.Get("issuer"))
		if err != nil {
			return err
		}
		sessions, families, err := p.EndUserSessions(ctx, name)
		if err != nil {
			return adminError(err)
		}
		return writeAdminJSON(w, map[string]any{"user": name, "sessions_ended": sessions, "refresh_families_revoked": families})

	case kind == "clients" && action == "revoke":
		if err := allow(w, r, http.MethodPost); err != nil {
			return err
		}
		p, err := findProvider(q.Get("issuer"))
		if err != nil {
			return err
		}
		n, err := p.RevokeClientTokens(ctx, name, q.Get("sub"))
		if err != nil {
			return adminError(err)
		}
		return writeAdminJSON(w, map[string]any{"client_id": name, "refresh_families_revoked": n})
	}
	return apiError(http.StatusNotFound, errors.New("not found"))
}

// allow answers 405 with an Allow header unless r's method is method.
func allow(w http.ResponseWriter, r *http.Request, method string) error {
	if r.Method == method {
		return nil
	}
	w.Header().Set("Allow", method)
	return apiError(http.StatusMethodNotAllowed, fmt.Errorf("method %s not allowed; use %s", r.Method, method))
}

// adminError maps an idp error to its status: an unknown name is 404;
// anything else is the store's failure, 503.
func adminError(err error) error {
	switch {
	case errors.Is(err, idp.ErrUnknownUser), errors.Is(err, idp.ErrUnknownClient):
		return apiError(http.StatusNotFound, err)
	default:
		return apiError(http.StatusServiceUnavailable, err)
	}
}

func apiError(status int, err error) error {
	return caddy.APIError{HTTPStatus: status, Err: err}
}

func writeAdminJSON(w http.ResponseWriter, v any) error {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	return json.NewEncoder(w).Encode(v)
}

// Interface guards
var _ caddy.AdminRouter = (*ProviderAdmin)(nil)
