package collector

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/url"
	"strings"
	"testing"

	"github.com/cxop-dev/cxop/internal/pseudonym"
)

// rotatedCustomerKey is the customer id key the tests rotate to from
// testCustomerKey.
const rotatedCustomerKey = "fedcba9876543210fedcba9876543210"

// pseudonymizeWith puts pseudonymization in force on c's server with the
// secrets file's customerIDKey (and customerIDKeyPrevious, when not ""),
// as a reload of both files does.
func pseudonymizeWith(t *testing.T, c *engineCollector, current, previous string) {
	t.Helper()
	file := fmt.Sprintf("linkKeys: {current: %s}\nwebhookKeys: {hook: %s}\ncustomerIDKey: %s\n",
		base64.StdEncoding.EncodeToString([]byte(strings.Repeat("L", 32))), base64.StdEncoding.EncodeToString([]byte(strings.Repeat("W", 32))),
		base64.StdEncoding.EncodeToString([]byte(current)))
	if previous != "" {
		file += "customerIDKeyPrevious: " + base64.StdEncoding.EncodeToString([]byte(previous)) + "\n"
	}
	sec, err := parseSecrets([]byte(file))
	if err != nil {
		t.Fatal(err)
	}
	cfg := *c.srv.cfg.Load()
	cfg.pseudonymizeCustomers = true
	keyed, err := withCustomerKey(&cfg, sec)
	if err != nil {
		t.Fatal(err)
	}
	c.srv.cfg.Store(keyed)
	c.srv.applySurveys(keyed, sec)
}

func pseudonymUnder(t *testing.T, key, customer string) string {
	t.Helper()
	k, err := pseudonym.NewKey([]byte(key))
	if err != nil {
		t.Fatal(err)
	}
	return k.ID(customer)
}

// TestRotatedCustomerIDKeyKeepsOldPseudonymsFindable: records ingested
// under key A, then under key B with A as the previous key. Ingest uses B
// alone; access, the per-customer export and erasure find the customer's
// records under both pseudonyms, on either engine.
func TestRotatedCustomerIDKeyKeepsOldPseudonymsFindable(t *testing.T) {
	for _, e := range []struct {
		name  string
		start func(t *testing.T) *engineCollector
	}{
		{StoreEmbedded, func(t *testing.T) *engineCollector { return startEngineCollector(t, t.TempDir()) }},
		{StorePostgres, func(t *testing.T) *engineCollector {
			return startPostgresEngineCollector(t, testPostgres(t).NewDatabase(t))
		}},
	} {
		t.Run(e.name, func(t *testing.T) {
			c := e.start(t)
			underA, underB := pseudonymUnder(t, testCustomerKey, "c-1"), pseudonymUnder(t, rotatedCustomerKey, "c-1")
			post := func(id, customer string) {
				t.Helper()
				if code, body, _ := c.post("/v1/events", chatToken, "", fmt.Sprintf(`{"id":%q,"touchpoint":"chat","customer":%q}`, id, customer)); code != 200 {
					t.Fatalf("event %s: %d %v", id, code, body)
				}
			}
			pseudonymizeWith(t, c, testCustomerKey, "")
			post("e-a1", "c-1")
			post("e-a2", "c-1")
			pseudonymizeWith(t, c, rotatedCustomerKey, testCustomerKey)
			post("e-b1", "c-1")
			post("e-other", "c-2")

			code, body := c.call("GET", "/v1/export?touchpoint=chat", readToken)
			if code != 200 || strings.Count(body, underA) != 2 || strings.Count(body, underB) != 1 || strings.Contains(body, `"c-1"`) {
				t.Fatalf("export: %d\n%s\nwant two records under key A's pseudonym and one under key B's, never the id", code, body)
			}
			code, body = c.call("GET", "/v1/export?touchpoint=chat&customer=c-1", readToken)
			if code != 200 || strings.Count(body, "\n") != 3 || strings.Count(body, underA) != 2 || strings.Count(body, underB) != 1 {
				t.Fatalf("export of c-1: %d\n%s\nwant its three records, under both keys", code, body)
			}
			code, body = c.call("GET", "/v1/customers/c-1", customerToken)
			if code != 200 || strings.Count(body, `"kind":"events"`) != 3 || !strings.Contains(body, underA) || !strings.Contains(body, underB) {
				t.Fatalf("GET /v1/customers/c-1: %d %s; want three events, under both pseudonyms", code, body)
			}
			code, body = c.call("DELETE", "/v1/customers/"+url.PathEscape("c-1"), customerToken)
			var answer struct {
				Erased map[string]int `json:"erased"`
			}
			if code != 200 || json.Unmarshal([]byte(body), &answer) != nil || answer.Erased["events"] != 3 {
				t.Fatalf("DELETE /v1/customers/c-1: %d %s; want 3 events erased", code, body)
			}
			if code, body := c.call("GET", "/v1/customers/c-1", customerToken); code != 404 {
				t.Errorf("GET c-1 after the erasure: %d %s; want 404", code, body)
			}
			code, body = c.call("GET", "/v1/export?touchpoint=chat", readToken)
			if code != 200 || strings.Count(body, "\n") != 1 || !strings.Contains(body, pseudonymUnder(t, rotatedCustomerKey, "c-2")) {
				t.Errorf("export after the erasure: %d\n%s\nwant c-2's record alone", code, body)
			}
		})
	}
}

// The ids a customer is looked under: the current key's pseudonym, the
// previous key's, and the id itself, each once.
func TestStoredCustomerIDsWithAPreviousKey(t *testing.T) {
	a, _ := pseudonym.NewKey([]byte(testCustomerKey))
	b, _ := pseudonym.NewKey([]byte(rotatedCustomerKey))
	srv := &Server{}
	srv.cfg.Store(&settings{pseudonymizeCustomers: true})
	srv.secrets.Store(&secrets{customerKey: b, customerKeyPrevious: a})
	got := srv.storedCustomerIDs("c-1")
	if want := []string{b.ID("c-1"), a.ID("c-1"), "c-1"}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("stored ids %q, want %q", got, want)
	}
	srv.secrets.Store(&secrets{customerKey: b, customerKeyPrevious: b})
	if got := srv.storedCustomerIDs("c-1"); len(got) != 2 {
		t.Errorf("previous key equal to the current one: %q, want each id once", got)
	}
	if _, err := parseSecrets([]byte("linkKeys: {current: " + base64.StdEncoding.EncodeToString([]byte(strings.Repeat("L", 32))) +
		"}\ncustomerIDKey: " + base64.StdEncoding.EncodeToString([]byte(rotatedCustomerKey)) +
		"\ncustomerIDKeyPrevious: " + base64.StdEncoding.EncodeToString([]byte("short")) + "\n")); err == nil ||
		err.Error() != "customerIDKeyPrevious: 5 bytes, need at least 32" {
		t.Errorf("a short previous key: %v", err)
	}
}
