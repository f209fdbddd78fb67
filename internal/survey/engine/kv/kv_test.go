package kv

import (
	"bytes"
	"testing"
)

func TestFeedEntriesRoundTrip(t *testing.T) {
	for _, c := range []struct {
		subject       string
		contact, body []byte
	}{
		{"chat", []byte(`{"email":"a@example.org"}`), []byte(`{"id":"e1"}`)},
		{"nps", nil, []byte(`{"id":"r1","score":3}`)},
		{"x", nil, nil},
	} {
		v := EncodeFeed('e', c.subject, c.contact, c.body)
		kind, subject, contact, body, err := DecodeFeed(v)
		if err != nil || kind != 'e' || subject != c.subject || !bytes.Equal(contact, c.contact) || (contact == nil) != (c.contact == nil) || !bytes.Equal(body, c.body) {
			t.Errorf("%q: got %c %q %q %q %v", v, kind, subject, contact, body, err)
		}
	}
	for _, bad := range [][]byte{nil, {'e'}, []byte("echat"), []byte("echat\x00\x00\x00"), []byte("echat\x00\x00\x00\x00\x09{}")} {
		if _, _, _, _, err := DecodeFeed(bad); err == nil {
			t.Errorf("%q decoded", bad)
		}
	}
}
