// Command service is a backend client of the authgate demo: it gets an
// access token with the client_credentials grant and calls the demo API.
//
//	go run ./examples/service
//
// ISSUER, CLIENT_ID, CLIENT_SECRET (default: the demo's DEMO_SERVICE_SECRET
// or demo-service-secret) and API_URL override the demo's settings.
package main

import (
	"context"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2/clientcredentials"
)

func main() {
	issuer := env("ISSUER", "http://localhost:9000")
	apiURL := env("API_URL", "http://localhost:8081/api/identity")
	secret := env("CLIENT_SECRET", env("DEMO_SERVICE_SECRET", "demo-service-secret"))

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	provider, err := oidc.NewProvider(ctx, issuer)
	if err != nil {
		log.Fatalf("discovering %s: %v", issuer, err)
	}
	conf := clientcredentials.Config{
		ClientID:     env("CLIENT_ID", "service"),
		ClientSecret: secret,
		TokenURL:     provider.Endpoint().TokenURL,
		Scopes:       []string{"api"},
	}
	client := conf.Client(ctx) // adds the token to every request, renewing it as needed
	resp, err := client.Get(apiURL)
	if err != nil {
		log.Fatalf("calling %s: %v", apiURL, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		log.Fatalf("reading the answer: %v", err)
	}
	if resp.StatusCode != http.StatusOK {
		log.Fatalf("%s answered %d: %s", apiURL, resp.StatusCode, body)
	}
	fmt.Printf("%s\n", body)
}

func env(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}
