package idp

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"mime"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/authgate/authgate/idp/dpop"
)

// tokenResponse is the successful token response of RFC 6749 §5.1 and
// OpenID Connect Core §3.1.3.3.
type tokenResponse struct {
	AccessToken  string `json:"access_token"`
	TokenType    string `json:"token_type"`
	ExpiresIn    int64  `json:"expires_in"`
	Scope        string `json:"scope,omitempty"`
	IDToken      string `json:"id_token,omitempty"`
	RefreshToken string `json:"refresh_token,omitempty"`
}

// usedCode remembers what a redeemed code issued, so that a replay of the
// code can revoke it (RFC 6749 §4.1.2).
type usedCode struct {
	JTI     string `json:"jti"`
	Expires int64  `json:"exp"`
	Family  string `json:"family,omitempty"` // refresh token family, if one was issued
}

// tokenRequest is a parsed token endpoint request: the form, each parameter
// at most once (RFC 6749 §3.2), and the credentials from the Authorization
// header, if any.
type tokenRequest struct {
	ctx         context.Context // the request's
	form        url.Values
	basicID     string
	basicSecret string
	hasBasic    bool

	// deferJTI: authenticateClient leaves the client assertion's jti in
	// assertionJTI for spendAssertion to record, rather than record it.
	deferJTI     bool
	assertionJTI *pendingJTI
}

func (t *tokenRequest) get(name string) string { return t.form.Get(name) }

// parseTokenRequest reads a token request's method, media type, body and
// Authorization header.
func parseTokenRequest(r *http.Request) (*tokenRequest, *Error) {
	ct, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || ct != "application/x-www-form-urlencoded" {
		return nil, oauthErr(ErrInvalidRequest, "the body must be application/x-www-form-urlencoded")
	}
	if err := r.ParseForm(); err != nil {
		return nil, oauthErr(ErrInvalidRequest, "the body could not be parsed")
	}
	t := &tokenRequest{ctx: r.Context(), form: params(r.PostForm)}
	if name := repeated(t.form, "grant_type", "code", "redirect_uri", "code_verifier", "client_id", "client_secret",
		"refresh_token", "scope", "username", "password", "token", "token_type_hint", "device_code",
		"client_assertion", "client_assertion_type"); name != "" {
		return nil, oauthErr(ErrInvalidRequest, "parameter "+name+" is given more than once")
	}
	if h := r.Header.Get("Authorization"); h != "" {
		scheme, cred, _ := strings.Cut(h, " ")
		if !strings.EqualFold(scheme, "Basic") {
			return nil, &Error{Code: ErrInvalidClient, Description: "client authentication must use the Basic scheme"}
		}
		id, secret, err := parseBasic(strings.TrimSpace(cred))
		if err != nil {
			return nil, &Error{Code: ErrInvalidClient, Description: "malformed Basic credentials"}
		}
		t.basicID, t.basicSecret, t.hasBasic = id, secret, true
	}
	return t, nil
}

// parseBasic decodes Basic credentials whose id and secret are each
// form-urlencoded first (RFC 6749 §2.3.1).
func parseBasic(cred string) (id, secret string, err error) {
	raw, err := base64.StdEncoding.DecodeString(cred)
	if err != nil {
		return "", "", err
	}
	rawID, rawSecret, ok := strings.Cut(string(raw), ":")
	if !ok {
		return "", "", errors.New("no colon")
	}
	if id, err = url.QueryUnescape(rawID); err != nil {
		return "", "", err
	}
	if secret, err = url.QueryUnescape(rawSecret); err != nil {
		return "", "", err
	}
	return id, secret, nil
}

// readBackChannel reads a request to the token, revocation or
// introspection endpoint: POST only (RFC 6749 §3.2, RFC 7009 §2.1, RFC
// 7662 §2.1), a bounded form body. On failure it has answered and returns
// nil.
func (p *Provider) readBackChannel(w http.ResponseWriter, r *http.Request) (*tokenRequest, *Error) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", "POST")
		oe := oauthErr(ErrInvalidRequest, "this endpoint accepts only POST")
		writeError(w, http.StatusMethodNotAllowed, oe)
		return nil, oe
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxFormBytes)
	t, oe := parseTokenRequest(r)
	if oe != nil {
		p.tokenError(w, r, oe)
		return nil, oe
	}
	return t, nil
}

func (p *Provider) serveToken(w http.ResponseWriter, r *http.Request) {
	treq, oe := p.readBackChannel(w, r)
	if oe != nil {
		p.emitRequest(r, Event{Type: EventTokenError, Error: oe.Code})
		return
	}
	gt := treq.get("grant_type")
	treq.deferJTI = true
	c, oe := p.authenticateClient(treq)
	if oe != nil {
		id, _, _ := treq.credentials()
		p.emitRequest(r, Event{Type: EventTokenError, Error: oe.Code, ClientID: truncate(id, 100), GrantType: knownGrant(gt)})
		p.tokenError(w, r, oe)
		return
	}
	bound, oe := p.tokenDPoP(w, r, c)
	if oe == nil {
		oe = p.spendAssertion(treq)
	}
	if oe != nil {
		p.emitRequest(r, Event{Type: EventTokenError, Error: oe.Code, ClientID: c.ID, GrantType: knownGrant(gt)})
		p.tokenError(w, r, oe)
		return
	}
	c = bound
	var resp *tokenResponse
	switch gt {
	case "authorization_code":
		resp, oe = p.exchangeCode(r, c, treq)
	case "refresh_token":
		resp, oe = p.refresh(r, c, treq)
	case "client_credentials":
		resp, oe = p.clientCredentials(r, c, treq)
	case "password":
		resp, oe = p.passwordGrant(r, c, treq)
	case GrantTypeDeviceCode:
		resp, oe = p.deviceToken(r, c, treq)
	case "":
		oe = oauthErr(ErrInvalidRequest, "grant_type is required")
	default:
		oe = oauthErr(ErrUnsupportedGrantType, "unsupported grant_type")
	}
	if oe != nil {
		// A device that polls while its user has not answered is the
		// device flow working, not a failure (RFC 8628 §3.5).
		if oe.Code != ErrAuthorizationPending && oe.Code != ErrSlowDown {
			p.emitRequest(r, Event{Type: EventTokenError, Error: oe.Code, ClientID: c.ID, GrantType: knownGrant(gt)})
		}
		p.tokenError(w, r, oe)
		return
	}
	if c.dpopJKT != "" {
		resp.TokenType = dpop.Scheme // RFC 9449 §5
	}
	writeJSON(w, http.StatusOK, resp)
}

// knownGrant is grant_type as an event holds it: one of the grants the
// token endpoint knows, else empty, so that what a client sends cannot
// make up a value.
func knownGrant(gt string) string {
	switch gt {
	case "authorization_code", "refresh_token", "client_credentials", "password", GrantTypeDeviceCode:
		return gt
	}
	return ""
}

// tokenError writes an error of RFC 6749 §5.2, logging its cause.
func (p *Provider) tokenError(w http.ResponseWriter, r *http.Request, e *Error) {
	status := http.StatusBadRequest
	switch e.Code {
	case ErrInvalidClient:
		// RFC 6749 §5.2: 401 with the scheme the client should use.
		status = http.StatusUnauthorized
		w.Header().Set("WWW-Authenticate", `Basic realm="`+p.issuer+`", charset="UTF-8"`)
	case ErrServerError:
		status = http.StatusInternalServerError
	case ErrTemporarilyUnavailable:
		status = http.StatusServiceUnavailable
		w.Header().Set("Retry-After", unavailableRetryAfter)
	}
	if e.Cause != nil {
		p.log.WarnContext(r.Context(), "token request failed", "error_code", e.Code, "error", e.Cause)
	}
	writeError(w, status, e)
}

// credentials returns the client_id and secret of a back-channel request:
// client_secret_basic, client_secret_post, or a bare client_id (public
// clients, token_endpoint_auth_method none). A request may use only one
// method (RFC 6749 §2.3).
func (t *tokenRequest) credentials() (id, secret string, oe *Error) {
	formSecret := t.form.Has("client_secret")
	assertion := t.form.Has("client_assertion") || t.form.Has("client_assertion_type")
	switch {
	case assertion && (t.hasBasic || formSecret):
		return "", "", oauthErr(ErrInvalidRequest, "use one client authentication method, not several")
	case assertion && t.get("client_assertion") == "":
		return "", "", oauthErr(ErrInvalidRequest, "client_assertion is required with client_assertion_type")
	case assertion:
		// private_key_jwt (RFC 7523 §2.2): authenticateClient checks it.
		return assertionID(t), "", nil
	case t.hasBasic && formSecret:
		return "", "", oauthErr(ErrInvalidRequest, "use one client authentication method, not several")
	case t.hasBasic:
		if fid := t.get("client_id"); fid != "" && fid != t.basicID {
			return "", "", oauthErr(ErrInvalidRequest, "client_id does not match the Authorization header")
		}
		return t.basicID, t.basicSecret, nil
	case formSecret:
		return t.get("client_id"), t.get("client_secret"), nil
	case t.get("client_id") != "":
		return t.get("client_id"), "", nil
	default:
		return "", "", &Error{Code: ErrInvalidClient, Description: "client authentication is required"}
	}
}

// authenticateClient checks a client's credentials: a confidential client
// its secret, a public client that it sent none.
func (p *Provider) authenticateClient(t *tokenRequest) (*client, *Error) {
	id, secret, oe := t.credentials()
	if oe != nil {
		return nil, oe
	}
	if t.form.Has("client_assertion") {
		return p.authenticateAssertion(t)
	}
	c := p.clients[id]
	if c != nil && c.Public {
		if secret != "" {
			return nil, &Error{Code: ErrInvalidClient, Description: "client authentication failed", Cause: fmt.Errorf("public client %q sent a secret", id)}
		}
		return c, nil
	}
	if !p.checkSecret(c, secret) || secret == "" {
		return nil, &Error{Code: ErrInvalidClient, Description: "client authentication failed", Cause: fmt.Errorf("bad credentials for client %q", truncate(id, 100))}
	}
	// A client registered with keys uses them, unless it also lists the
	// secret's method (Client.TokenEndpointAuthMethods).
	if method := t.secretMethod(); !c.allows(method) {
		return nil, &Error{Code: ErrInvalidClient, Description: "client authentication failed", Cause: fmt.Errorf("client %q may not use %s", id, method)}
	}
	return c, nil
}

// secretMethod is the method by which a request sent a secret.
func (t *tokenRequest) secretMethod() string {
	if t.hasBasic {
		return AuthClientSecretBasic
	}
	return AuthClientSecretPost
}

// checkSecret compares in constant time; an unknown client costs the same
// as a wrong secret.
func (p *Provider) checkSecret(c *client, secret string) bool {
	if c != nil && c.secretHash != nil {
		ok, err := p.comparer.Compare(c.secretHash, []byte(secret))
		return err == nil && ok
	}
	want := "\x00unknown client"
	if c != nil {
		want = c.Secret
	}
	// Hashing first makes the comparison independent of the lengths.
	a, b := sha256.Sum256([]byte(secret)), sha256.Sum256([]byte(want))
	return subtle.ConstantTimeCompare(a[:], b[:]) == 1 && c != nil
}

// exchangeCode redeems an authorization code (RFC 6749 §4.1.3, RFC 7636
// §4.6).
func (p *Provider) exchangeCode(r *http.Request, c *client, t *tokenRequest) (*tokenResponse, *Error) {
	if len(c.redirects) == 0 {
		return nil, oauthErr(ErrUnauthorizedClient, "the client may not use the authorization_code grant")
	}
	code := t.get("code")
	if code == "" {
		return nil, oauthErr(ErrInvalidRequest, "code is required")
	}
	redirect := t.get("redirect_uri")
	if redirect == "" {
		return nil, oauthErr(ErrInvalidRequest, "redirect_uri is required")
	}
	ctx := r.Context()
	data, err := p.store.Take(ctx, codeKey(code))
	if errors.Is(err, ErrNotFound) {
		if err := p.revokeReplayedCode(r, c, code); err != nil {
			// Not invalid_grant: the replay check did not happen, and the
			// retry this asks for revokes what the code issued.
			return nil, unavailable("the code could not be checked", err)
		}
		return nil, oauthErr(ErrInvalidGrant, "the code is invalid, expired or already used")
	}
	if err != nil {
		return nil, unavailable("the code could not be checked", err)
	}
	var g codeGrant
	if err := json.Unmarshal(data, &g); err != nil {
		return nil, &Error{Code: ErrServerError, Description: "the code could not be read", Cause: err}
	}
	now := p.now()
	switch {
	case now.Unix() >= g.Expires:
		return nil, oauthErr(ErrInvalidGrant, "the code is invalid, expired or already used")
	case g.ClientID != c.ID:
		return nil, &Error{Code: ErrInvalidGrant, Description: "the code was issued to another client", Cause: fmt.Errorf("client %q presented a code of client %q", c.ID, g.ClientID)}
	case g.RedirectURI != redirect:
		return nil, oauthErr(ErrInvalidGrant, "redirect_uri does not match the authorization request")
	}
	if oe := checkPKCE(g.Challenge, g.Method, t); oe != nil {
		return nil, oe
	}
	if oe := codeBinding(g, c); oe != nil {
		return nil, oe
	}
	user := p.activeUser(g.Subject)
	if user == nil {
		return nil, oauthErr(ErrInvalidGrant, "the user no longer exists or is disabled")
	}

	var family string
	if slices.Contains(g.Scopes, scopeOfflineAccess) {
		family = p.randomString(16)
	}
	resp, jti, err := p.issueTokens(c, user, g.Scopes, g.Nonce, g.signIn(), family)
	if err != nil {
		p.putBackCode(ctx, code, data, g)
		return nil, &Error{Code: ErrServerError, Description: "tokens could not be issued", Cause: err}
	}
	record := usedCode{JTI: jti, Expires: now.Add(c.AccessTokenLifetime).Unix()}
	var entries []Entry
	var fg refreshGrant // the grant of the family's first refresh token
	if slices.Contains(g.Scopes, scopeOfflineAccess) {
		record.Family = family
		var e Entry
		fg = p.familyGrant(c, family, user.Subject, g.Scopes, g.signIn())
		e, resp.RefreshToken, err = p.refreshEntry(c, fg, "")
		if err != nil {
			p.putBackCode(ctx, code, data, g)
			return nil, unavailable("the refresh token could not be stored", err)
		}
		entries = append(entries, e)
	}
	used, _ := json.Marshal(record)
	entries = append(entries, Entry{Key: usedCodeKey(code), Value: used, TTL: max(c.AccessTokenLifetime, p.codeTTL)})
	// One write for the refresh token and the record of the code.
	if err := putAll(ctx, p.store, entries...); err != nil {
		p.putBackCode(ctx, code, data, g)
		return nil, unavailable("the code could not be recorded", err)
	}
	if family != "" {
		p.indexFamily(ctx, fg, fg.Used)
		p.recordFamily(ctx, c, g.SID, user.Subject, g.AuthTime, heldFamily{Family: family, End: fg.End})
	}
	p.log.InfoContext(ctx, "token issued", "client_id", c.ID, "sub", user.Subject, "grant_type", "authorization_code", "scope", resp.Scope)
	p.emitRequest(r, Event{Type: EventTokenIssued, Subject: user.Subject, ClientID: c.ID, GrantType: "authorization_code", SID: g.SID})
	return resp, nil
}

// putBackCode returns a code taken for an exchange that the store then
// failed, with its record and end as they were, so that the client's retry
// after the outage redeems it rather than sending the user to log in
// again. Nobody was given the tokens of the failed attempt: a refresh
// token stored before the failure is an orphan no one holds, and the
// retry issues its own. If the store fails this too, the code is lost.
func (p *Provider) putBackCode(ctx context.Context, code string, data []byte, g codeGrant) {
	ttl := time.Unix(g.Expires, 0).Sub(p.now())
	if ttl <= 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), undoTimeout)
	defer cancel()
	if err := p.store.Put(ctx, codeKey(code), data, ttl); err != nil {
		p.log.ErrorContext(ctx, "putting back a code after a failed exchange: its user must log in again", "client_id", g.ClientID, "sub", g.Subject, "error", err)
	}
}

// checkPKCE verifies code_verifier against the challenge of the
// authorization request (RFC 7636 §4.6). A verifier for a code issued
// without a challenge is refused too (RFC 9700 §2.1.1, downgrade).
func checkPKCE(challenge, method string, t *tokenRequest) *Error {
	verifier := t.get("code_verifier")
	if challenge == "" {
		if verifier != "" {
			return oauthErr(ErrInvalidGrant, "code_verifier given, but the authorization request had no code_challenge")
		}
		return nil
	}
	if verifier == "" {
		return oauthErr(ErrInvalidGrant, "code_verifier is required")
	}
	if !validVerifier(verifier) {
		return oauthErr(ErrInvalidGrant, "code_verifier must be 43 to 128 characters of [A-Za-z0-9-._~]")
	}
	computed := verifier
	if method == "S256" {
		sum := sha256.Sum256([]byte(verifier))
		computed = base64RawURL(sum[:])
	}
	if subtle.ConstantTimeCompare([]byte(computed), []byte(challenge)) != 1 {
		return oauthErr(ErrInvalidGrant, "code_verifier does not match the code_challenge")
	}
	return nil
}

// revokeReplayedCode revokes what a code issued when it is presented again
// (RFC 6749 §4.1.2: the code was likely stolen). It returns the store's
// failure, if any: then the replay may have been missed, or its tokens not
// revoked.
func (p *Provider) revokeReplayedCode(r *http.Request, c *client, code string) error {
	ctx := r.Context()
	data, err := p.store.Get(ctx, usedCodeKey(code))
	switch {
	case errors.Is(err, ErrNotFound):
		return nil // never issued, expired, or redeemed too long ago
	case err != nil:
		return fmt.Errorf("reading a redeemed code's record: %w", err)
	}
	var u usedCode
	if json.Unmarshal(data, &u) != nil {
		return nil
	}
	if u.Family != "" {
		if err := p.store.Put(ctx, revokedFamilyKey(u.Family), []byte{1}, max(c.familyLifetime(), p.revokeFloor)); err != nil {
			return fmt.Errorf("revoking the refresh tokens of a replayed code: %w", err)
		}
	}
	if ttl := time.Unix(u.Expires, 0).Sub(p.now()); ttl > 0 {
		if err := p.store.Put(ctx, revokedKey(u.JTI), []byte{1}, ttl); err != nil {
			return fmt.Errorf("revoking the access token of a replayed code: %w", err)
		}
	}
	p.log.WarnContext(ctx, "authorization code replayed: tokens it issued are revoked", "client_id", c.ID, "jti", u.JTI)
	p.emitRequest(r, Event{Type: EventCodeReplay, ClientID: c.ID})
	return nil
}

// issueTokens signs an access token and, for openid requests, an ID token.
// family, if any, is the refresh token family the access token belongs
// to: revoking the family revokes it too (RFC 7009 §2.1).
func (p *Provider) issueTokens(c *client, u *User, scopes []string, nonce string, in signIn, family string) (*tokenResponse, string, error) {
	now := p.now()
	keys := p.keys.Load() // one key set for both tokens
	scope := strings.Join(scopes, " ")
	jti := p.randomString(16)
	at := accessClaims{
		Issuer:   p.issuer,
		Subject:  u.Subject,
		Audience: p.audience(scopes),
		ClientID: c.ID,
		Scope:    scope,
		Expiry:   now.Add(c.AccessTokenLifetime).Unix(),
		IssuedAt: now.Unix(),
		ID:       jti,
		AuthTime: in.Time,
		SID:      in.SID,
		GrantID:  family,
	}
	if c.dpopJKT != "" {
		at.Confirmation = &confirmation{JKT: c.dpopJKT}
	}
	access, err := signAccess(keys.atSigner, at, p.resourceClaims(u, at.Audience))
	if err != nil {
		return nil, "", fmt.Errorf("signing access token: %w", err)
	}
	resp := &tokenResponse{
		AccessToken: access,
		TokenType:   "Bearer",
		ExpiresIn:   int64(c.AccessTokenLifetime / time.Second),
		Scope:       scope,
	}
	if slices.Contains(scopes, "openid") {
		claims := p.userClaims(u, scopes)
		claims["iss"] = p.issuer
		claims["aud"] = c.ID
		claims["exp"] = now.Add(c.IDTokenLifetime).Unix()
		claims["iat"] = now.Unix()
		claims["auth_time"] = in.Time
		claims["at_hash"] = leftHalfHash(access)
		if in.SID != "" {
			claims["sid"] = in.SID
		}
		if len(in.AMR) > 0 {
			claims["amr"] = in.AMR
		}
		if in.ACR != "" {
			claims["acr"] = in.ACR
		}
		if nonce != "" {
			claims["nonce"] = nonce
		}
		if resp.IDToken, err = sign(keys.signers[c.IDTokenAlg], claims); err != nil {
			return nil, "", fmt.Errorf("signing id token: %w", err)
		}
	}
	return resp, jti, nil
}

// audience is the aud of an access token: every API resource one of whose
// scopes was granted, else the static audience; with EmitStaticAudience
// the static audience first and then the resources.
func (p *Provider) audience(scopes []string) []string {
	var aud []string
	if p.emitStatic {
		aud = append(aud, p.staticAud)
	}
	for _, r := range p.resources {
		if slices.ContainsFunc(r.Scopes, func(s string) bool { return slices.Contains(scopes, s) }) && !slices.Contains(aud, r.Name) {
			aud = append(aud, r.Name)
		}
	}
	if len(aud) == 0 {
		aud = []string{p.staticAud}
	}
	return aud
}

// resourceClaims returns the claims of u that the API resources in aud
// list as their UserClaims, those u has. New has refused the names an
// access token sets itself, so none of them can be overridden.
func (p *Provider) resourceClaims(u *User, aud []string) map[string]any {
	var out map[string]any
	for _, r := range p.resources {
		if len(r.UserClaims) == 0 || !slices.Contains(aud, r.Name) {
			continue
		}
		for _, name := range r.UserClaims {
			if v, ok := u.Claims[name]; ok {
				if out == nil {
					out = make(map[string]any)
				}
				out[name] = v
			}
		}
	}
	return out
}

// userClaims returns sub and the user's claims released by the identity
// scopes in scopes (OpenID Connect Core §5.4).
func (p *Provider) userClaims(u *User, scopes []string) map[string]any {
	out := map[string]any{"sub": u.Subject}
	for _, s := range scopes {
		for _, name := range identityScopes[s] {
			if v, ok := u.Claims[name]; ok {
				out[name] = v
			}
		}
		if s == "profile" {
			if _, ok := out["preferred_username"]; !ok {
				out["preferred_username"] = u.Username
			}
		}
	}
	return out
}
