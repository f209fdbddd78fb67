package pseudonym

import (
	"bytes"
	"fmt"
	"log/slog"
	"strings"
	"testing"
)

// The expected values were computed apart from this package, with
// `printf %s "$ID" | openssl dgst -sha256 -hmac "$KEY"` (or
// `-mac HMAC -macopt hexkey:…` for binary keys); the last is RFC 4231's
// test case 6.
func TestIDIsTheHexHMACSHA256(t *testing.T) {
	text := []byte("0123456789abcdef0123456789abcdef")
	for _, tc := range []struct {
		key      []byte
		customer string
		want     string
	}{
		{text, "c-1", "d7ccb1ef4822e9a15dd5f66434ba19ee661429da03335062c5f0b861e504e518"},
		{text, "", "796cd3078af14636753d26b3b5555422ff55a3e261cf847b48e95371b9bd0aa2"},
		{text, "customer 42", "aea1973e02ba85a9e6f79c39cb1c05a2a5503f69adbf6f4179a8a10dbcb4c06f"},
		{text, "ünïcödé-кириллица", "fc694e36347caa5ed479986a2ce8cd1bd8582600b2132712b39952ccb7db02a6"},
		{text, `=HYPERLINK("x")`, "8bc6c3879fe099ce31ceed48b75fc7f8376c29b40d710bb374ac43c688907534"},
		{make([]byte, 32), "c-1", "7979fe6ce97400940d8491fc6230954d1754d9e884811e6a457dceaac5450943"},
		{bytes.Repeat([]byte{0xaa}, 131), "Test Using Larger Than Block-Size Key - Hash Key First", "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"},
	} {
		k, err := NewKey(tc.key)
		if err != nil {
			t.Fatal(err)
		}
		if got := k.ID(tc.customer); got != tc.want {
			t.Errorf("ID(%q) = %s, want %s", tc.customer, got, tc.want)
		}
		if !k.Matches(tc.customer, tc.want) || k.Matches(tc.customer+"x", tc.want) || k.Matches(tc.customer, strings.ToUpper(tc.want)) {
			t.Errorf("Matches(%q) disagrees with ID", tc.customer)
		}
	}
}

func TestNewKeyNeedsThirtyTwoBytesAndCopiesThem(t *testing.T) {
	if _, err := NewKey(make([]byte, 31)); err == nil || err.Error() != "31 bytes, need at least 32" {
		t.Errorf("31-byte key: %v", err)
	}
	b := []byte("0123456789abcdef0123456789abcdef")
	k, err := NewKey(b)
	if err != nil {
		t.Fatal(err)
	}
	before := k.ID("c-1")
	b[0] = 'X' // the caller's buffer is not the key
	if k.ID("c-1") != before {
		t.Error("changing the caller's bytes changed the key")
	}
	other, _ := NewKey(b)
	same, _ := NewKey([]byte("0123456789abcdef0123456789abcdef"))
	if !k.Equal(same) || k.Equal(other) || k.Equal(nil) || !(*Key)(nil).Equal(nil) {
		t.Error("Equal is wrong")
	}
}

func TestKeyNeverPrints(t *testing.T) {
	secret := "SECRET-KEY-MATERIAL-0123456789abcdef"
	k, _ := NewKey([]byte(secret))
	var logged bytes.Buffer
	slog.New(slog.NewJSONHandler(&logged, nil)).Info("key", "key", k)
	for _, s := range []string{fmt.Sprint(k), fmt.Sprintf("%v %+v %#v %s", k, k, k, k), logged.String()} {
		if strings.Contains(s, "SECRET") || !strings.Contains(s, "redacted") {
			t.Errorf("printed key: %s", s)
		}
	}
}
