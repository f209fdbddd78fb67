// Package link signs and verifies the tokens of survey links.
//
// A token names one invitation and when it expires, and carries an
// HMAC-SHA256 over the invitation, its survey, its customer and the expiry.
// The survey and customer are not in the token, so a link shows nothing
// about who it was sent to; the collector looks the invitation up and
// verifies the MAC over what it finds, which binds the token to that
// survey and that customer: a token moved to another survey or customer
// fails. Tokens are verified against the current key and the previous one,
// so rotating the key breaks no link already sent.
package link

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"time"
)

// InvitationIDSize is the size of an invitation id in bytes.
const InvitationIDSize = 16

// MinKeySize is the smallest signing key accepted, in bytes.
const MinKeySize = 32

const (
	version     = 1
	payloadSize = 1 + InvitationIDSize + 8
	tokenSize   = payloadSize + sha256.Size
)

// InvitationID identifies one invitation; it is random and unguessable.
type InvitationID [InvitationIDSize]byte

// String renders the id as lowercase hex, as it appears in the collector's
// API and webhooks.
func (id InvitationID) String() string { return fmt.Sprintf("%x", id[:]) }

// Claims is what a token binds.
type Claims struct {
	Invitation InvitationID
	Survey     string
	Customer   string
	Expires    time.Time
}

// Keys are the signing keys: Current signs; both verify.
type Keys struct {
	Current  []byte
	Previous []byte
}

// Errors of Verify. ErrExpired is returned only for a token whose MAC is
// valid, so an expired page is never shown for a forged link.
var (
	ErrMalformed = errors.New("the link token is malformed")
	ErrForged    = errors.New("the link token's signature does not match")
	ErrExpired   = errors.New("the link has expired")
)

// Sign returns the token for c, signed with keys.Current.
func Sign(keys Keys, c Claims) (string, error) {
	if len(keys.Current) < MinKeySize {
		return "", fmt.Errorf("signing key: %d bytes, need at least %d", len(keys.Current), MinKeySize)
	}
	var tok [tokenSize]byte
	tok[0] = version
	copy(tok[1:], c.Invitation[:])
	binary.BigEndian.PutUint64(tok[1+InvitationIDSize:], uint64(c.Expires.Unix()))
	copy(tok[payloadSize:], mac(keys.Current, tok[:payloadSize], c))
	return base64.RawURLEncoding.EncodeToString(tok[:]), nil
}

// Parse reads the invitation and expiry out of a token without verifying
// it, so the caller can look the invitation up and then call Verify.
func Parse(token string) (InvitationID, time.Time, error) {
	var id InvitationID
	raw, err := base64.RawURLEncoding.DecodeString(token)
	if err != nil || len(raw) != tokenSize || raw[0] != version {
		return id, time.Time{}, ErrMalformed
	}
	copy(id[:], raw[1:])
	expires := time.Unix(int64(binary.BigEndian.Uint64(raw[1+InvitationIDSize:])), 0).UTC()
	return id, expires, nil
}

// Verify checks that token was signed for c by either key and has not
// expired at now. c.Expires is ignored: the expiry is the token's own, and
// it is covered by the MAC.
func Verify(keys Keys, token string, c Claims, now time.Time) error {
	raw, err := base64.RawURLEncoding.DecodeString(token)
	if err != nil || len(raw) != tokenSize || raw[0] != version {
		return ErrMalformed
	}
	id, expires, _ := Parse(token)
	if id != c.Invitation {
		return ErrForged
	}
	c.Expires = expires
	payload, got := raw[:payloadSize], raw[payloadSize:]
	ok := false
	for _, k := range [][]byte{keys.Current, keys.Previous} {
		if len(k) >= MinKeySize && hmac.Equal(got, mac(k, payload, c)) {
			ok = true
		}
	}
	if !ok {
		return ErrForged
	}
	if !now.Before(expires) {
		return ErrExpired
	}
	return nil
}

// mac covers the token's bytes and the claims that are not in it, each
// length-prefixed so that no two claim sets share an encoding.
func mac(key, payload []byte, c Claims) []byte {
	h := hmac.New(sha256.New, key)
	h.Write(payload)
	for _, s := range []string{c.Survey, c.Customer} {
		var n [4]byte
		binary.BigEndian.PutUint32(n[:], uint32(len(s)))
		h.Write(n[:])
		h.Write([]byte(s))
	}
	return h.Sum(nil)
}
