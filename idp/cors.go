package idp

import "net/http"

// cors lets scripts of registered origins (any client's CORSOrigins) call
// h, answering their preflight requests; other origins get no CORS
// headers, so their scripts cannot read the response.
func (p *Provider) cors(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		hdr := w.Header()
		hdr.Add("Vary", "Origin")
		origin := r.Header.Get("Origin")
		allowed := origin != "" && p.corsOrigins[origin]
		if allowed {
			hdr.Set("Access-Control-Allow-Origin", origin)
			hdr.Set("Access-Control-Expose-Headers", "WWW-Authenticate, DPoP-Nonce")
		}
		if r.Method == http.MethodOptions && r.Header.Get("Access-Control-Request-Method") != "" {
			if allowed {
				hdr.Add("Vary", "Access-Control-Request-Method")
				hdr.Add("Vary", "Access-Control-Request-Headers")
				hdr.Set("Access-Control-Allow-Methods", "GET, POST")
				hdr.Set("Access-Control-Allow-Headers", "Authorization, Content-Type, DPoP")
				hdr.Set("Access-Control-Max-Age", "600")
			}
			w.WriteHeader(http.StatusNoContent)
			return
		}
		h(w, r)
	}
}
