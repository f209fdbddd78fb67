package link

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestSignAndVerify(t *testing.T) {
	now := time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)
	oldKey, key, otherKey := bytes.Repeat([]byte{1}, 32), bytes.Repeat([]byte{2}, 32), bytes.Repeat([]byte{3}, 32)
	claims := Claims{Invitation: InvitationID{7, 7, 7}, Survey: "support-nps", Customer: "c-42", Expires: now.Add(7 * 24 * time.Hour)}
	signedOld, err := Sign(Keys{Current: oldKey}, claims)
	if err != nil {
		t.Fatal(err)
	}
	token, err := Sign(Keys{Current: key, Previous: oldKey}, claims)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(token, "c-42") || strings.ContainsAny(token, "+/=") {
		t.Errorf("token %q leaks the customer or is not URL-safe", token)
	}
	id, expires, err := Parse(token)
	if err != nil || id != claims.Invitation || !expires.Equal(claims.Expires) {
		t.Fatalf("Parse = %v, %v, %v", id, expires, err)
	}
	rotated := Keys{Current: key, Previous: oldKey}
	swapped := func(edit func(*Claims)) Claims { c := claims; edit(&c); return c }
	tamper := func(tok string, at int) string {
		b := []byte(tok)
		if b[at] == 'A' {
			b[at] = 'B'
		} else {
			b[at] = 'A'
		}
		return string(b)
	}
	for _, tc := range []struct {
		name   string
		keys   Keys
		token  string
		claims Claims
		now    time.Time
		want   error
	}{
		{"valid", rotated, token, claims, now, nil},
		{"signed before the rotation", rotated, signedOld, claims, now, nil},
		{"key retired twice", Keys{Current: otherKey, Previous: key}, signedOld, claims, now, ErrForged},
		{"other key", Keys{Current: otherKey}, token, claims, now, ErrForged},
		{"cross-survey", rotated, token, swapped(func(c *Claims) { c.Survey = "delivery-csat" }), now, ErrForged},
		{"other customer", rotated, token, swapped(func(c *Claims) { c.Customer = "c-43" }), now, ErrForged},
		{"other invitation", rotated, token, swapped(func(c *Claims) { c.Invitation[0] = 8 }), now, ErrForged},
		{"tampered expiry", rotated, tamper(token, 25), claims, now, ErrForged},
		{"tampered mac", rotated, tamper(token, 60), claims, now, ErrForged},
		{"expired", rotated, token, claims, claims.Expires, ErrExpired},
		{"truncated", rotated, token[:40], claims, now, ErrMalformed},
		{"not base64", rotated, "!!" + token[2:], claims, now, ErrMalformed},
		{"empty", rotated, "", claims, now, ErrMalformed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := Verify(tc.keys, tc.token, tc.claims, tc.now); !errors.Is(err, tc.want) {
				t.Errorf("Verify = %v, want %v", err, tc.want)
			}
		})
	}
}

func TestSignRefusesShortKeys(t *testing.T) {
	if _, err := Sign(Keys{Current: []byte("short")}, Claims{}); err == nil || !strings.Contains(err.Error(), "at least 32") {
		t.Fatalf("Sign with a 5-byte key: %v", err)
	}
}
