package idp

import (
	"bytes"
	"embed"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"net/http"
	"slices"
)

//go:embed templates/*.html
var embeddedTemplates embed.FS

// Template names an operator can override.
var templateNames = []string{"login.html", "consent.html", "error.html", "message.html", "logout.html", "device.html", "login_totp.html", "totp.html", "account.html"}

// fixedTemplates are embedded templates an operator cannot override: the
// form_post, front-channel logout and passkeys pages' CSP allows exactly
// their one script, by hash.
var fixedTemplates = []string{"form_post.html", frontchannelTemplate, "passkeys.html"}

// parseTemplates parses the embedded templates, each of templateNames
// replaced by the file of the same name in override when it has one.
func parseTemplates(override fs.FS) (*template.Template, error) {
	root := template.New("")
	for _, name := range append(templateNames[:len(templateNames):len(templateNames)], fixedTemplates...) {
		src, err := embeddedTemplates.ReadFile("templates/" + name)
		if err != nil {
			return nil, err
		}
		if override != nil && !slices.Contains(fixedTemplates, name) {
			b, err := fs.ReadFile(override, name)
			switch {
			case err == nil:
				src = b
			case !errors.Is(err, fs.ErrNotExist):
				return nil, fmt.Errorf("idp: reading template %s: %w", name, err)
			}
		}
		if _, err := root.New(name).Parse(string(src)); err != nil {
			return nil, fmt.Errorf("idp: parsing template %s: %w", name, err)
		}
	}
	return root, nil
}

// pageError is a failure shown to the user as a page, for requests that
// cannot be answered by redirect (RFC 6749 §4.1.2.1).
type pageError struct {
	status int
	msg    string
}

func (e *pageError) Error() string { return "idp: " + e.msg }

type errorPage struct {
	Status  int
	Title   string
	Message string
}

type messagePage struct {
	Title     string
	Message   string
	LogoutURL string
	CSRF      string // the sign-out form's token
}

// logoutPage asks whether to sign out.
type logoutPage struct {
	Action   string
	Request  string // sealed logoutRequest, empty when there is nowhere to return
	CSRF     string
	Username string // empty when the session cannot be seen
	Error    string
}

func (p *Provider) renderError(w http.ResponseWriter, r *http.Request, e *pageError) {
	p.render(w, r, e.status, "error.html", errorPage{Status: e.status, Title: http.StatusText(e.status), Message: e.msg})
}

func (p *Provider) renderMessage(w http.ResponseWriter, r *http.Request, status int, title, msg string, signedIn bool) {
	page := messagePage{Title: title, Message: msg}
	if signedIn {
		page.LogoutURL = p.base + PathLogout
		page.CSRF = p.csrfToken(w, r)
	}
	p.render(w, r, status, "message.html", page)
}

// renderLogout asks the user of session s (nil when it cannot be seen)
// whether to sign out; lr, if any, is where to go after the answer.
func (p *Provider) renderLogout(w http.ResponseWriter, r *http.Request, status int, s *session, lr *logoutRequest, errMsg string) {
	page := logoutPage{Action: p.base + PathLogout, Error: errMsg}
	if s != nil {
		page.Username = p.username(s.Subject)
	}
	if lr != nil && lr.RedirectURI != "" {
		sealed := *lr
		sealed.Issued = p.now().Unix()
		v, err := p.cookies.Encode(logoutReqName, &sealed)
		if err != nil {
			p.log.ErrorContext(r.Context(), "sealing sign-out request", "error", err)
			p.renderError(w, r, &pageError{status: http.StatusInternalServerError, msg: "The sign-out page could not be shown."})
			return
		}
		page.Request = v
	}
	page.CSRF = p.csrfToken(w, r)
	p.render(w, r, status, "logout.html", page)
}

func (p *Provider) renderLogin(w http.ResponseWriter, r *http.Request, status int, page loginPage) {
	page.Action = p.base + PathLogin
	page.CSRF = p.csrfToken(w, r)
	if p.webauthn != nil {
		page.PasskeyAction, page.PasskeyOptions, page.PasskeyScript = p.base+PathPasskeyLogin, p.base+PathPasskeyOptions, template.JS(passkeyScript)
		p.renderCSP(w, r, status, "login.html", page, passkeyCSP)
		return
	}
	p.render(w, r, status, "login.html", page)
}

// pageCSP is the Content-Security-Policy of the provider's pages.
const pageCSP = "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'"

func (p *Provider) render(w http.ResponseWriter, r *http.Request, status int, name string, data any) {
	p.renderCSP(w, r, status, name, data, pageCSP)
}

// renderCSP is render with the Content-Security-Policy csp.
func (p *Provider) renderCSP(w http.ResponseWriter, r *http.Request, status int, name string, data any, csp string) {
	var buf bytes.Buffer
	if err := p.templates.ExecuteTemplate(&buf, name, data); err != nil {
		p.log.ErrorContext(r.Context(), "rendering page", "template", name, "error", err)
		http.Error(w, "internal error rendering page", http.StatusInternalServerError)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Frame-Options", "DENY")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Content-Security-Policy", csp)
	w.WriteHeader(status)
	if r.Method != http.MethodHead {
		w.Write(buf.Bytes())
	}
}
