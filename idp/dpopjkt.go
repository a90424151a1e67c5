package idp

import (
	"crypto/hmac"
	"encoding/base64"
	"fmt"
	"net/http"
	"net/url"

	"github.com/authgate/authgate/idp/dpop"
)

// Authorization code binding to a DPoP key (RFC 9449 §10). An
// authorization request may carry dpop_jkt, the JWK SHA-256 thumbprint of
// the key the client will prove at the token endpoint; the code records
// it, and the token endpoint redeems the code only with a proof of that
// key. A pushed request binds the same way, by dpop_jkt in its body or by
// a DPoP proof on the push itself (§10.1). A code issued without dpop_jkt
// is redeemed as before, with or without a proof, whatever the client's
// require_dpop says.

// paramDPoPJKT is the authorization request parameter of RFC 9449 §10.
const paramDPoPJKT = "dpop_jkt"

// validJKT reports whether s is a JWK SHA-256 thumbprint as RFC 9449 §10
// and §6.1 write one: 32 bytes in unpadded base64url, 43 characters, in
// the one canonical spelling (Strict refuses stray low bits).
func validJKT(s string) bool {
	if len(s) != 43 {
		return false
	}
	b, err := base64.RawURLEncoding.Strict().DecodeString(s)
	return err == nil && len(b) == 32
}

// checkProof checks the DPoP proof of a back-channel request to target
// (RFC 9449 §4.3), taking its jti once: nil and no error if the request
// has none. With nonces on, the answer carries the current nonce (§8).
func (p *Provider) checkProof(w http.ResponseWriter, r *http.Request, target *url.URL) (*dpop.Proof, *Error) {
	raw, err := dpop.FromHeader(r.Header)
	if err != nil {
		return nil, &Error{Code: ErrInvalidDPoPProof, Description: "the DPoP header is invalid", Cause: err}
	}
	if raw == "" {
		return nil, nil
	}
	now := p.now()
	if p.dpop.nonceKey != nil {
		w.Header().Set(dpop.NonceHeader, p.dpop.nonce(now))
	}
	proof, err := dpop.Verify(raw, dpop.Check{Method: r.Method, URL: target, Now: now, Nonce: p.dpop.nonceCheck(now)})
	if oe := dpopErr(err); oe != nil {
		return nil, oe
	}
	if oe := p.dpopOnce(r.Context(), proof); oe != nil {
		return nil, oe
	}
	return proof, nil
}

// pushedDPoP applies the DPoP proof of a pushed authorization request to
// its parameters (RFC 9449 §10.1): the proof is checked as at the token
// endpoint, and binds the code as dpop_jkt would; a dpop_jkt beside it
// must name the proof's key. form has been checked by
// parseAuthorizeRequest, so it holds at most one dpop_jkt that is not
// empty, and that one is well formed.
func (p *Provider) pushedDPoP(w http.ResponseWriter, r *http.Request, form url.Values) *Error {
	proof, oe := p.checkProof(w, r, p.dpop.parURL)
	if oe != nil || proof == nil {
		return oe
	}
	if jkt := params(form).Get(paramDPoPJKT); jkt != "" && !hmac.Equal([]byte(jkt), []byte(proof.JKT)) {
		// §10.1 says to reject the request and names no error code: the
		// proof is valid by §4.3, so not invalid_dpop_proof; the request
		// contradicts itself, which is invalid_request (RFC 9126 §2.3).
		return oauthErr(ErrInvalidRequest, "dpop_jkt is not the thumbprint of the DPoP proof's key")
	}
	form[paramDPoPJKT] = []string{proof.JKT}
	return nil
}

// codeBinding refuses to redeem a code bound to a DPoP key (RFC 9449 §10)
// unless c, the client as the token request's proof bound it, proved that
// key. §10 names no error code; this is invalid_grant, as for a code
// verifier that does not match (RFC 7636 §4.6): the proof itself is
// valid, the grant is not the one for it (RFC 6749 §5.2).
// invalid_dpop_proof stays for proofs that fail RFC 9449 §4.3.
func codeBinding(g codeGrant, c *client) *Error {
	switch {
	case g.DPoPJKT == "":
		return nil
	case c.dpopJKT == "":
		return &Error{Code: ErrInvalidGrant, Description: "the code is bound to a DPoP key (dpop_jkt): send a DPoP proof of that key",
			Cause: fmt.Errorf("client %q presented a code bound to a DPoP key without a proof", c.ID)}
	case !hmac.Equal([]byte(g.DPoPJKT), []byte(c.dpopJKT)):
		return &Error{Code: ErrInvalidGrant, Description: "the code is bound to another DPoP key than the proof's",
			Cause: fmt.Errorf("client %q presented a code bound to a DPoP key with a proof of another key", c.ID)}
	}
	return nil
}
