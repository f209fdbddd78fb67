package link

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"strings"
	"testing"
	"time"
)

// FuzzLinkToken feeds arbitrary tokens and claims to Parse and Verify
// (the corpus is in testdata/fuzz/FuzzLinkToken). Neither panics; a token
// is accepted only if it is, byte for byte once decoded, the token Sign
// makes for those claims; and a token signed for one survey and customer
// never verifies for another split of the same bytes or another customer.
func FuzzLinkToken(f *testing.F) {
	key, previous := bytes.Repeat([]byte{2}, 32), bytes.Repeat([]byte{1}, 32)
	keys := Keys{Current: key, Previous: previous}
	now := time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)
	valid, err := Sign(keys, Claims{Invitation: InvitationID{7}, Survey: "nps", Customer: "c-42", Expires: now.Add(time.Hour)})
	if err != nil {
		f.Fatal(err)
	}
	for _, seed := range []struct{ token, survey, customer string }{
		{valid, "nps", "c-42"},
		{valid[:40], "nps", "c-42"},
		{valid + "A", "nps", "c-42"},
		{"!!" + valid[2:], "nps", "c-42"},
		{valid[:20] + "\n" + valid[20:], "nps", "c-42"},
		{"", "", ""},
		{"AQ", "a", "bc"},
	} {
		f.Add(seed.token, seed.survey, seed.customer)
	}
	f.Fuzz(func(t *testing.T, token, survey, customer string) {
		id, expires, perr := Parse(token)
		c := Claims{Invitation: id, Survey: survey, Customer: customer}
		verr := Verify(keys, token, c, now)
		if perr != nil && !errors.Is(verr, ErrMalformed) {
			t.Fatalf("Parse refused %q (%v) but Verify said %v", token, perr, verr)
		}
		if verr == nil || errors.Is(verr, ErrExpired) {
			c.Expires = expires
			want1, _ := Sign(Keys{Current: key}, c)
			want2, _ := Sign(Keys{Current: previous}, c)
			// The base64 decoder skips line breaks; nothing else may differ.
			got := strings.NewReplacer("\r", "", "\n", "").Replace(token)
			if got != want1 && got != want2 {
				t.Fatalf("accepted %q (%v), which no key signed for %+v", token, verr, c)
			}
			if errors.Is(verr, ErrExpired) != !now.Before(expires) {
				t.Fatalf("%q expires %s: Verify at %s said %v", token, expires, now, verr)
			}
		}

		// What Sign makes verifies for its claims only.
		sum := sha256.Sum256([]byte(token))
		c = Claims{Invitation: InvitationID(sum[:InvitationIDSize]), Survey: survey, Customer: customer, Expires: now.Add(time.Hour)}
		signed, err := Sign(keys, c)
		if err != nil {
			t.Fatal(err)
		}
		if err := Verify(keys, signed, c, now); err != nil {
			t.Fatalf("a fresh token for %+v: %v", c, err)
		}
		if err := Verify(Keys{Current: bytes.Repeat([]byte{3}, 32), Previous: key}, signed, c, now); err != nil {
			t.Fatalf("after a rotation, a token for %+v: %v", c, err)
		}
		other := c
		other.Customer += "x"
		if err := Verify(keys, signed, other, now); !errors.Is(err, ErrForged) {
			t.Fatalf("a token for customer %q verified for %q: %v", c.Customer, other.Customer, err)
		}
		if joined := survey + customer; len(joined) > 0 {
			split := c
			split.Survey, split.Customer = joined[:len(joined)/2], joined[len(joined)/2:]
			if (split.Survey != c.Survey) && !errors.Is(Verify(keys, signed, split, now), ErrForged) {
				t.Fatalf("a token for (%q, %q) verified for (%q, %q)", c.Survey, c.Customer, split.Survey, split.Customer)
			}
		}
	})
}
