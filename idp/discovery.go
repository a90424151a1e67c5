package idp

import (
	"encoding/json"
	"net/http"
	"slices"
	"sort"

	"github.com/authgate/authgate/idp/dpop"
)

// discoveryDocument builds the provider metadata of OpenID Connect
// Discovery 1.0 §3, whose ID token algorithms are algs; it changes only
// with the configuration and the signing keys.
func (p *Provider) discoveryDocument(algs []string) ([]byte, error) {
	scopes := []string{"openid", "profile", "email", "address", "phone", "groups", scopeOfflineAccess}
	n := len(scopes)
	for s := range p.apiScopes {
		scopes = append(scopes, s)
	}
	sort.Strings(scopes[n:])
	claims := []string{"sub", "iss", "aud", "exp", "iat", "auth_time", "nonce", "at_hash", "sid", "acr", "amr"}
	for _, s := range []string{"profile", "email", "address", "phone", "groups"} {
		claims = append(claims, identityScopes[s]...)
	}
	grants := []string{"authorization_code", "refresh_token"}
	authMethods := []string{"client_secret_basic", "client_secret_post"}
	var cc, pw, public, device, keyJWT bool
	for _, c := range p.clients {
		keyJWT = keyJWT || c.allows(AuthPrivateKeyJWT)
		cc = cc || c.AllowClientCredentials
		pw = pw || c.AllowPasswordGrant
		public = public || c.Public
		device = device || c.AllowDeviceFlow
	}
	if cc {
		grants = append(grants, "client_credentials")
	}
	if pw {
		grants = append(grants, "password")
	}
	if device {
		grants = append(grants, GrantTypeDeviceCode)
	}
	introspectMethods := []string{"client_secret_basic", "client_secret_post"}
	if keyJWT {
		authMethods = append(authMethods, AuthPrivateKeyJWT)
		introspectMethods = append(introspectMethods, AuthPrivateKeyJWT)
	}
	if public {
		authMethods = append(authMethods, "none")
	}
	pkce := []string{"S256"}
	for _, c := range p.clients {
		if c.AllowPlainPKCE {
			pkce = append(pkce, "plain")
			break
		}
	}
	slices.Sort(algs) // RS256 before ES256 would be nicer, but sorted is stable: ES256, RS256
	doc := map[string]any{
		"issuer":                                         p.issuer,
		"authorization_endpoint":                         p.url(PathAuthorize),
		"token_endpoint":                                 p.url(PathToken),
		"userinfo_endpoint":                              p.url(PathUserinfo),
		"jwks_uri":                                       p.url(PathJWKS),
		"end_session_endpoint":                           p.url(PathEndSession),
		"revocation_endpoint":                            p.url(PathRevocation),
		"introspection_endpoint":                         p.url(PathIntrospect),
		"scopes_supported":                               scopes,
		"claims_supported":                               claims,
		"response_types_supported":                       []string{"code"},
		"response_modes_supported":                       responseModes,
		"grant_types_supported":                          grants,
		"subject_types_supported":                        []string{"public"},
		"id_token_signing_alg_values_supported":          algs,
		"token_endpoint_auth_methods_supported":          authMethods,
		"revocation_endpoint_auth_methods_supported":     authMethods,
		"introspection_endpoint_auth_methods_supported":  introspectMethods,
		"code_challenge_methods_supported":               pkce,
		"prompt_values_supported":                        []string{"none", "login", "consent", "select_account"},
		"claims_parameter_supported":                     false,
		"request_parameter_supported":                    false,
		"request_uri_parameter_supported":                false,
		"authorization_response_iss_parameter_supported": true,
		"backchannel_logout_supported":                   true,                  // Back-Channel Logout 1.0 §2.1
		"backchannel_logout_session_supported":           true,                  // our logout tokens carry sid
		"frontchannel_logout_supported":                  true,                  // Front-Channel Logout 1.0 §3
		"frontchannel_logout_session_supported":          true,                  // iss and sid, as in ID tokens
		"dpop_signing_alg_values_supported":              dpop.AlgorithmNames(), // RFC 9449 §5.1
		"acr_values_supported":                           acrValuesSupported,    // acr.go
	}
	// RFC 9126 §5: the PAR endpoint, and whether every client must use it.
	doc["pushed_authorization_request_endpoint"] = p.url(PathPushedAuthorization)
	doc["require_pushed_authorization_requests"] = p.requirePAR
	if keyJWT {
		// RFC 8414 §2: required beside private_key_jwt.
		doc["token_endpoint_auth_signing_alg_values_supported"] = ClientAssertionAlgs
		doc["revocation_endpoint_auth_signing_alg_values_supported"] = ClientAssertionAlgs
		doc["introspection_endpoint_auth_signing_alg_values_supported"] = ClientAssertionAlgs
	}
	if p.checkSession != nil {
		doc["check_session_iframe"] = p.url(PathCheckSession) // Session Management §3.3
	}
	if device {
		doc["device_authorization_endpoint"] = p.url(PathDeviceAuthorization) // RFC 8628 §4
	}
	return json.Marshal(doc)
}

func (p *Provider) serveDiscovery(w http.ResponseWriter, r *http.Request) {
	serveStaticJSON(w, r, p.keys.Load().discovery, "public, max-age=300")
}

// serveJWKS serves the public keys, cacheable for the JWKS max age: keys
// are published ahead of use for longer than that (see
// [Config.JWKSMaxAge]).
func (p *Provider) serveJWKS(w http.ResponseWriter, r *http.Request) {
	serveStaticJSON(w, r, p.keys.Load().jwks, p.jwksMaxAge)
}

func serveStaticJSON(w http.ResponseWriter, r *http.Request, body []byte, cacheControl string) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		writeError(w, http.StatusMethodNotAllowed, &Error{Code: ErrInvalidRequest, Description: "method not allowed"})
		return
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", cacheControl)
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodGet {
		w.Write(body)
	}
}
