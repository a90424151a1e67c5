package idp

import (
	"net/http"
	"strings"
	"time"

	"github.com/gorilla/securecookie"
)

// DeviceCookie is the name of the cookie that marks a browser where a
// user has logged in before: OWASP's "device cookie". It is sealed with
// the provider's cookie keys and bound to the username, and lets that
// browser past the throttle's per-username limit for that username only
// (see [ThrottleConfig]).
const DeviceCookie = "authgate_provider_device"

// device is the content of a device cookie.
type device struct {
	ID   string `json:"id"` // the throttle counts the cookie's failures by it
	User string `json:"u"`  // lower-cased, as the throttle's keys
}

// deviceFor returns the id of r's device cookie if it is valid and was
// set by a login as username, or "".
func (p *Provider) deviceFor(r *http.Request, username string) string {
	ck, err := r.Cookie(DeviceCookie)
	if err != nil {
		return ""
	}
	var d device
	if err := securecookie.DecodeMulti(DeviceCookie, ck.Value, &d, p.deviceSet...); err != nil {
		return ""
	}
	if d.ID == "" || d.User != strings.ToLower(username) {
		return ""
	}
	return d.ID
}

// writeDevice gives the browser a new device cookie for username, good
// for the device cookie lifetime from now.
func (p *Provider) writeDevice(w http.ResponseWriter, username string) error {
	v, err := securecookie.EncodeMulti(DeviceCookie, device{ID: p.randomString(16), User: strings.ToLower(username)}, p.deviceSet[0])
	if err != nil {
		return err
	}
	http.SetCookie(w, p.cookie(DeviceCookie, v, int(p.throttleCfg.DeviceCookieLifetime/time.Second)))
	return nil
}
