// Package pseudonym turns customer ids into keyed pseudonyms: the
// lowercase hex HMAC-SHA256 of the id under a per-namespace key. The same
// id under the same key is always the same pseudonym, so everything keyed
// by customer (sampling, the contact budget, distinct counts, idempotency,
// erasure) works on pseudonyms as on ids; without the key a pseudonym
// cannot be turned back into the id, nor an id guessed from a list of
// candidates and compared.
package pseudonym

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"fmt"
	"log/slog"
)

// MinKeySize is the shortest key accepted: as many bytes as the hash
// gives, so that the key is not the weaker half.
const MinKeySize = 32

// Key is a pseudonymisation key. Its bytes never leave it: it prints and
// logs as a placeholder.
type Key struct {
	b []byte
}

// NewKey returns a key holding a copy of b, which must have at least
// MinKeySize bytes. The error gives the length, never the bytes.
func NewKey(b []byte) (*Key, error) {
	if len(b) < MinKeySize {
		return nil, fmt.Errorf("%d bytes, need at least %d", len(b), MinKeySize)
	}
	return &Key{b: append([]byte(nil), b...)}, nil
}

// ID is customer's pseudonym: 64 lowercase hex digits. HMAC-SHA256 does
// the same work whatever the id holds, so its timing says nothing about
// the id or the key.
func (k *Key) ID(customer string) string {
	m := hmac.New(sha256.New, k.b)
	_, _ = m.Write([]byte(customer))
	var sum [sha256.Size]byte
	return hex.EncodeToString(m.Sum(sum[:0]))
}

// Matches reports whether pseudonym is customer's, comparing in constant
// time.
func (k *Key) Matches(customer, pseudonym string) bool {
	return hmac.Equal([]byte(k.ID(customer)), []byte(pseudonym))
}

// Equal reports whether two keys are the same key (and so give the same
// pseudonyms), in constant time; nil equals only nil.
func (k *Key) Equal(o *Key) bool {
	if k == nil || o == nil {
		return k == o
	}
	return subtle.ConstantTimeCompare(k.b, o.b) == 1
}

// String keeps the key out of anything that prints it.
func (k *Key) String() string { return "pseudonym.Key(redacted)" }

// GoString keeps the key out of %#v.
func (k *Key) GoString() string { return k.String() }

// LogValue keeps the key out of structured logs.
func (k *Key) LogValue() slog.Value { return slog.StringValue(k.String()) }
