package delivery_test

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"time"

	"github.com/switchboard-dev/switchboard/delivery"
)

// verify is what a receiver does with a Switchboard webhook, using only
// the standard library: recompute HMAC-SHA256 of "id.timestamp.body" with
// the secret (the base64 after "whsec_"), compare it with each v1
// signature of the webhook-signature header, and refuse old timestamps so
// that a captured request cannot be replayed later.
func verify(secret string, h http.Header, body []byte, now time.Time) error {
	key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(secret, "whsec_"))
	if err != nil {
		return err
	}
	id, ts := h.Get("webhook-id"), h.Get("webhook-timestamp")
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil || now.Sub(time.Unix(sec, 0)).Abs() > 5*time.Minute {
		return errors.New("timestamp missing or too far from now")
	}
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(id + "." + ts + "."))
	mac.Write(body)
	want := mac.Sum(nil)
	for _, sig := range strings.Fields(h.Get("webhook-signature")) {
		v, b64, _ := strings.Cut(sig, ",")
		got, err := base64.StdEncoding.DecodeString(b64)
		if v == "v1" && err == nil && hmac.Equal(got, want) {
			return nil // the webhook-id is the same on every retry: drop one already seen
		}
	}
	return errors.New("no signature matches")
}

// Example_verifySignature checks a webhook as a receiver would. Switchboard
// signs with every secret configured, so a receiver holding either the
// old or the new one accepts it while a secret is rotated.
func Example_verifySignature() {
	secret := "whsec_" + base64.StdEncoding.EncodeToString([]byte("a shared secret of 32 bytes ....."))
	receiver := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body := make([]byte, r.ContentLength)
		r.Body.Read(body)
		if err := verify(secret, r.Header, body, time.Now()); err != nil {
			http.Error(w, err.Error(), http.StatusUnauthorized)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	defer receiver.Close()

	// What Switchboard sends: the same headers, from delivery.Signature.
	s, _ := delivery.ParseSecret(secret)
	body := []byte(`{"specversion":"1.0","type":"dev.switchboard.decision","id":"sb-12-0"}`)
	now := time.Now()
	for _, sign := range []string{delivery.Signature([]delivery.Secret{s}, "sb-12-0", now, body), "v1,bm90IHRoZSBzaWduYXR1cmU="} {
		req, _ := http.NewRequest("POST", receiver.URL, strings.NewReader(string(body)))
		req.Header.Set("webhook-id", "sb-12-0")
		req.Header.Set("webhook-timestamp", strconv.FormatInt(now.Unix(), 10))
		req.Header.Set("webhook-signature", sign)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			panic(err)
		}
		resp.Body.Close()
		fmt.Println(resp.StatusCode)
	}
	// Output:
	// 204
	// 401
}
