package delivery

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"strconv"
	"strings"
	"time"
)

// Secret is a Standard Webhooks signing secret: "whsec_" followed by the
// base64 of the key, as the receiver was given it.
type Secret struct {
	key []byte
}

const secretPrefix = "whsec_"

// ParseSecret reads a secret written as whsec_BASE64.
func ParseSecret(s string) (Secret, error) {
	b64, ok := strings.CutPrefix(strings.TrimSpace(s), secretPrefix)
	if !ok {
		return Secret{}, errors.New(`a signing secret starts with "whsec_" followed by base64 (generate one with: printf 'whsec_%s\n' "$(head -c 32 /dev/urandom | base64)")`)
	}
	key, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		return Secret{}, errors.New(`a signing secret is "whsec_" followed by base64, and what follows whsec_ is not base64`)
	}
	if len(key) < 16 {
		return Secret{}, errors.New("a signing secret needs a key of at least 16 bytes (24 characters of base64)")
	}
	return Secret{key: key}, nil
}

// String hides the secret, so that it never reaches a log.
func (Secret) String() string { return secretPrefix + "…" }

// Signature is the webhook-signature header for a body: one "v1,BASE64"
// per secret, separated by spaces, so that a receiver holding either the
// old or the new secret accepts it while secrets are rotated.
func Signature(secrets []Secret, id string, at time.Time, body []byte) string {
	var b strings.Builder
	ts := strconv.FormatInt(at.Unix(), 10)
	for i, s := range secrets {
		mac := hmac.New(sha256.New, s.key)
		mac.Write([]byte(id))
		mac.Write([]byte{'.'})
		mac.Write([]byte(ts))
		mac.Write([]byte{'.'})
		mac.Write(body)
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString("v1,")
		b.WriteString(base64.StdEncoding.EncodeToString(mac.Sum(nil)))
	}
	return b.String()
}
