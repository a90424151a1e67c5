// Command assertion-verifier is an upstream that trusts only requests that
// came through authgate's gateway: it checks the identity assertion of
// each request against the gateway's published keys and answers 200 with
// the asserted identity as JSON, or 401.
//
//	go run ./examples/assertion-verifier -listen 127.0.0.1:8091 \
//		-site http://localhost:8080
//
// -site is the gateway's site origin, which is the assertion's iss and,
// by default, its aud; the keys are fetched from
// <site>/.well-known/authgate/jwks.json.
package main

import (
	"flag"
	"log"
	"net/http"
	"strings"
	"time"

	"github.com/authgate/authgate/examples/assertion-verifier/verifier"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:8091", "address to listen on")
	site := flag.String("site", "http://localhost:8080", "the gateway's site origin: the assertion's iss")
	audience := flag.String("audience", "", "the assertion's aud (default: -site)")
	jwks := flag.String("jwks", "", "the JWKS URL (default: <site>/.well-known/authgate/jwks.json)")
	header := flag.String("header", "X-Authgate-Assertion", "the header that carries the assertion")
	flag.Parse()

	v := &verifier.Verifier{Issuer: strings.TrimSuffix(*site, "/"), Audience: *audience, JWKSURL: *jwks}
	if v.Audience == "" {
		v.Audience = v.Issuer
	}
	if v.JWKSURL == "" {
		v.JWKSURL = v.Issuer + "/.well-known/authgate/jwks.json"
	}
	srv := &http.Server{Addr: *listen, Handler: v.Handler(*header), ReadHeaderTimeout: 10 * time.Second}
	log.Printf("assertion-verifier on %s, trusting %s", *listen, v.Issuer)
	log.Fatal(srv.ListenAndServe())
}
