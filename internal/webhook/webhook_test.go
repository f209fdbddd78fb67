package webhook

import (
	"context"
	"encoding/base64"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"
)

var testKey = []byte("0123456789abcdef0123456789abcdef")

// loopbackClient reaches the plain-http test servers on this machine.
func loopbackClient() *Client {
	return NewClient(&Guard{AllowLoopback: true, AllowHTTP: true}, 5*time.Second)
}

func TestSendSignsInTheStandardWebhooksForm(t *testing.T) {
	verifier, err := standardwebhooks.NewWebhook(secretPrefix + base64.StdEncoding.EncodeToString(testKey))
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var ids []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if err := verifier.Verify(body, r.Header); err != nil {
			t.Errorf("the reference verifier refused the signature: %v", err)
		}
		if r.Header.Get("Content-Type") != "application/json" {
			t.Errorf("Content-Type = %q", r.Header.Get("Content-Type"))
		}
		mu.Lock()
		ids = append(ids, r.Header.Get("webhook-id"))
		mu.Unlock()
	}))
	defer srv.Close()
	c := loopbackClient()
	m := Message{ID: "msg_1", Body: []byte(`{"survey":"support-nps"}`)}
	for range 2 {
		if res := c.Send(context.Background(), Endpoint{URL: srv.URL, Key: testKey}, m); res.Outcome != Delivered || res.Status != 200 {
			t.Fatalf("Send = %+v", res)
		}
	}
	if len(ids) != 2 || ids[0] != "msg_1" || ids[1] != "msg_1" {
		t.Errorf("webhook-id of two attempts = %v, want msg_1 twice", ids)
	}

	// A tampered body fails the reference verifier: the signature covers it.
	h := http.Header{}
	signer, _ := standardwebhooks.NewWebhookRaw(testKey)
	sig, _ := signer.Sign("msg_2", time.Now(), []byte(`{"a":1}`))
	h.Set("webhook-id", "msg_2")
	h.Set("webhook-timestamp", strconv.FormatInt(time.Now().Unix(), 10))
	h.Set("webhook-signature", sig)
	if err := verifier.Verify([]byte(`{"a":2}`), h); err == nil {
		t.Error("a tampered body verified")
	}
}

func TestSendOutcomes(t *testing.T) {
	for _, tc := range []struct {
		status     int
		retryAfter string
		want       Outcome
		wantAfter  time.Duration
	}{
		{200, "", Delivered, 0},
		{204, "", Delivered, 0},
		{500, "", Retry, 0},
		{503, "120", Retry, 2 * time.Minute},
		{429, "7", Retry, 7 * time.Second},
		{429, "999999", Retry, maxRetryAfter},
		{408, "", Retry, 0},
		{410, "", Gone, 0},
		// Any other answer keeps the message: a 401 while the receiver's
		// key is rotated ahead of ours must not lose it.
		{400, "", Retry, 0},
		{401, "", Retry, 0},
		{403, "", Retry, 0},
		{404, "", Retry, 0},
		{422, "", Retry, 0},
		{302, "", Retry, 0},
	} {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if tc.retryAfter != "" {
				w.Header().Set("Retry-After", tc.retryAfter)
			}
			w.WriteHeader(tc.status)
		}))
		res := loopbackClient().Send(context.Background(), Endpoint{URL: srv.URL, Key: testKey}, Message{ID: "m", Body: []byte("{}")})
		srv.Close()
		if res.Outcome != tc.want || res.Status != tc.status || res.RetryAfter != tc.wantAfter {
			t.Errorf("%d Retry-After %q: got %v status %d after %v, want %v after %v", tc.status, tc.retryAfter, res.Outcome, res.Status, res.RetryAfter, tc.want, tc.wantAfter)
		}
	}
}

func TestGuardRefusesInsideAddresses(t *testing.T) {
	g := &Guard{Deny: []netip.Prefix{netip.MustParsePrefix("93.184.215.0/24")}}
	for addr, want := range map[string]string{
		"127.0.0.1":       "loopback",
		"::1":             "loopback",
		"::ffff:10.0.0.1": "private",
		"10.96.0.1":       "private",
		"172.16.5.4":      "private",
		"192.168.1.1":     "private",
		"fd00::1":         "private",
		"169.254.169.254": "link-local",
		"fe80::1":         "link-local",
		"100.64.0.10":     "shared (carrier-grade NAT)",
		"0.0.0.0":         "unspecified",
		"239.1.2.3":       "multicast",
		"93.184.215.9":    "denied (in 93.184.215.0/24)",
		"93.184.216.34":   "",
		"2606:4700::1111": "",
		// Reserved and special-purpose IPv4 ranges (RFC 6890).
		"0.1.2.3":         "this-network",
		"198.18.0.1":      "benchmarking",
		"198.19.255.254":  "benchmarking",
		"240.0.0.1":       "reserved",
		"255.255.255.255": "broadcast",
		"192.0.2.1":       "documentation",
		"203.0.113.9":     "documentation",
		"192.0.0.8":       "IETF protocol assignment",
		"2001:db8::1":     "documentation",
		"100::1":          "discard-only",
		// IPv6 forms that carry a refused IPv4 to a translator or relay.
		"64:ff9b::a00:1":                       "private (NAT64 of 10.0.0.1)",
		"64:ff9b::7f00:1":                      "loopback (NAT64 of 127.0.0.1)",
		"64:ff9b::5db8:d822":                   "",
		"64:ff9b:1::1":                         "local-use NAT64",
		"2002:a9fe:a9fe::1":                    "link-local (6to4 of 169.254.169.254)",
		"2002:5db8:d822::1":                    "",
		"2001:0:4136:e378:8000:63bf:f5ff:fffe": "private (Teredo of 10.0.0.1)",
		"::a00:1":                              "private (IPv4-compatible form of 10.0.0.1)",
		// Cloud metadata services.
		"169.254.170.2":   "link-local",
		"100.100.100.200": "shared (carrier-grade NAT)",
		"fd00:ec2::254":   "private",
	} {
		if got := g.check(netip.MustParseAddr(addr)); got != want {
			t.Errorf("check(%s) = %q, want %q", addr, got, want)
		}
	}
}

// TestGuardKeepsMetadataFromAllowedHosts: an allow-listed host may reach the
// internal network, never a cloud metadata service, which hands out the
// node's credentials.
func TestGuardKeepsMetadataFromAllowedHosts(t *testing.T) {
	for _, addr := range []string{"169.254.169.254", "169.254.170.2", "169.254.170.23", "fd00:ec2::254", "fd00:ec2::23", "100.100.100.200", "::ffff:169.254.169.254"} {
		if !isMetadata(netip.MustParseAddr(addr)) {
			t.Errorf("%s is not recognised as a metadata address", addr)
		}
	}
	if isMetadata(netip.MustParseAddr("10.0.0.1")) {
		t.Error("10.0.0.1 taken for a metadata address")
	}
	g := &Guard{AllowHosts: []string{"169.254.169.254"}}
	_, err := g.DialContext(context.Background(), "tcp", "169.254.169.254:80")
	var blocked *BlockedError
	if !errors.As(err, &blocked) || !strings.Contains(err.Error(), "cloud metadata") {
		t.Fatalf("dial of an allow-listed metadata address: %v", err)
	}
}

func TestSendRefusesLoopbackAndRedirectsInside(t *testing.T) {
	inside := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		t.Error("a guarded request reached the inside server")
	}))
	defer inside.Close()
	guarded := NewClient(&Guard{AllowHTTP: true}, 5*time.Second)
	res := guarded.Send(context.Background(), Endpoint{URL: inside.URL, Key: testKey}, Message{ID: "m", Body: []byte("{}")})
	var blocked *BlockedError
	if res.Outcome != Rejected || !errors.As(res.Err, &blocked) || !strings.Contains(res.Err.Error(), "loopback") {
		t.Fatalf("Send to loopback = %+v", res)
	}

	// An allowed host that redirects inside: the redirect is dialled
	// through the guard again and refused.
	redirector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, inside.URL, http.StatusTemporaryRedirect)
	}))
	defer redirector.Close()
	allowLocalhost := NewClient(&Guard{AllowHosts: []string{"localhost"}, AllowHTTP: true}, 5*time.Second)
	url := strings.Replace(redirector.URL, "127.0.0.1", "localhost", 1)
	res = allowLocalhost.Send(context.Background(), Endpoint{URL: url, Key: testKey}, Message{ID: "m", Body: []byte("{}")})
	// Not followed, and kept for a retry: the receiver's redirect may be
	// a mistake it fixes, and nothing is dropped for it.
	if res.Outcome != Retry || res.Err == nil || !strings.Contains(res.Err.Error(), "redirect to another host") {
		t.Fatalf("Send through a redirect to another host = %+v", res)
	}

	// A redirect on the same host and scheme is followed, and still
	// dialled through the guard.
	sameHost := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/moved" {
			w.WriteHeader(http.StatusNoContent)
			return
		}
		http.Redirect(w, r, "/moved", http.StatusTemporaryRedirect)
	}))
	defer sameHost.Close()
	url = strings.Replace(sameHost.URL, "127.0.0.1", "localhost", 1)
	if res = allowLocalhost.Send(context.Background(), Endpoint{URL: url, Key: testKey}, Message{ID: "m", Body: []byte("{}")}); res.Outcome != Delivered {
		t.Fatalf("Send through a same-host redirect = %+v", res)
	}
}

// TestSendRefusesPlainHTTPByDefault: a webhook carries a customer's contact
// and is signed; it goes over https unless http is explicitly allowed, and
// the refusal names the URL and the reason, with nothing dialled.
func TestSendRefusesPlainHTTPByDefault(t *testing.T) {
	var hits int
	var mu sync.Mutex
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		hits++
		mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	}))
	defer srv.Close()
	msg := Message{ID: "m", Body: []byte("{}")}
	for _, url := range []string{srv.URL + "/hook", strings.Replace(srv.URL, "http://", "HTTP://", 1) + "/hook"} {
		res := NewClient(&Guard{AllowLoopback: true}, 5*time.Second).Send(context.Background(), Endpoint{URL: url, Key: testKey}, msg)
		var scheme *SchemeError
		if res.Outcome != Rejected || !errors.As(res.Err, &scheme) || scheme.Scheme != "http" ||
			!strings.Contains(res.Err.Error(), "uses http; webhooks are sent over https only") {
			t.Errorf("Send to %s without AllowHTTP = %+v, want Rejected naming http", url, res)
		}
	}
	for _, url := range []string{"ftp://example.com/hook", "gopher://example.com/", "//example.com/hook"} {
		res := NewClient(&Guard{AllowHTTP: true}, 5*time.Second).Send(context.Background(), Endpoint{URL: url, Key: testKey}, msg)
		if res.Outcome != Rejected || res.Err == nil || !strings.Contains(res.Err.Error(), "is not https") {
			t.Errorf("Send to %s = %+v, want Rejected: not https", url, res)
		}
	}
	mu.Lock()
	if hits != 0 {
		t.Errorf("a refused webhook reached the receiver %d times", hits)
	}
	mu.Unlock()
	// Allowed explicitly, the same receiver gets the message.
	if res := loopbackClient().Send(context.Background(), Endpoint{URL: srv.URL + "/hook", Key: testKey}, msg); res.Outcome != Delivered {
		t.Errorf("Send over http with AllowHTTP = %+v", res)
	}
	if err := (&Guard{}).CheckURL("https://hooks.example.com/cx"); err != nil {
		t.Errorf("CheckURL(https) = %v", err)
	}
}

// TestGuardRefusesDeniedRangesExceptForAllowedHosts: the cluster's pod and
// Service ranges, when public, are refused by address; an allowed host (an
// in-cluster mailer) still reaches them, a metadata address never.
func TestGuardRefusesDeniedRangesExceptForAllowedHosts(t *testing.T) {
	deny, err := ParseDenyCIDRs([]string{"34.118.224.0/20", " 35.1.0.0/16 ", "2600:1900:4000::/44", "203.0.113.7", "::ffff:36.0.0.0/104", ""})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"34.118.224.0/20", "35.1.0.0/16", "2600:1900:4000::/44", "203.0.113.7/32", "36.0.0.0/8"}
	if len(deny) != len(want) {
		t.Fatalf("ParseDenyCIDRs = %v, want %v", deny, want)
	}
	for i := range want {
		if deny[i].String() != want[i] {
			t.Errorf("ParseDenyCIDRs[%d] = %s, want %s", i, deny[i], want[i])
		}
	}
	g := &Guard{Deny: deny}
	for addr, why := range map[string]string{
		"34.118.230.9":       "denied (in 34.118.224.0/20)",
		"35.1.200.1":         "denied (in 35.1.0.0/16)",
		"2600:1900:4001::1":  "denied (in 2600:1900:4000::/44)",
		"::ffff:35.1.0.1":    "denied (in 35.1.0.0/16)",
		"36.4.5.6":           "denied (in 36.0.0.0/8)",
		"64:ff9b::2276:e609": "denied (in 34.118.224.0/20) (NAT64 of 34.118.230.9)",
		"34.118.240.1":       "",
		"8.8.8.8":            "",
	} {
		if got := g.check(netip.MustParseAddr(addr)); got != why {
			t.Errorf("check(%s) = %q, want %q", addr, got, why)
		}
	}
	for _, bad := range []string{"10.0.0.0/33", "not-a-range", "10.0.0.0/8,", "fd00::/129"} {
		if _, err := ParseDenyCIDRs([]string{bad}); err == nil || !strings.Contains(err.Error(), strconv.Quote(strings.TrimSpace(bad))) {
			t.Errorf("ParseDenyCIDRs(%q) = %v, want an error naming it", bad, err)
		}
	}

	// Through DialContext: refused by range, with the reason.
	_, err = g.DialContext(context.Background(), "tcp", "34.118.230.9:443")
	var blocked *BlockedError
	if !errors.As(err, &blocked) || blocked.Why != "denied (in 34.118.224.0/20)" {
		t.Errorf("dial into a denied range: %v", err)
	}
	// An allowed host skips the ranges; a range denied explicitly wins
	// over AllowLoopback.
	allowed := &Guard{Deny: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}, AllowLoopback: true, AllowHosts: []string{"127.0.0.1"}}
	l := httptest.NewServer(http.NotFoundHandler())
	defer l.Close()
	conn, err := allowed.DialContext(context.Background(), "tcp", strings.TrimPrefix(l.URL, "http://"))
	if err != nil {
		t.Errorf("an allowed host in a denied range was refused: %v", err)
	} else {
		conn.Close()
	}
	notAllowed := &Guard{Deny: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}, AllowLoopback: true}
	if _, err := notAllowed.DialContext(context.Background(), "tcp", strings.TrimPrefix(l.URL, "http://")); !errors.As(err, &blocked) || blocked.Why != "denied (in 127.0.0.0/8)" {
		t.Errorf("a loopback address in a denied range, loopback allowed: %v, want refused by the range", err)
	}
}

// TestSendDoesNotFollowARedirectFromHTTPSToHTTP: an https receiver that
// redirects to http on the same host is not followed, so the signed payload
// never goes out in the clear.
func TestSendDoesNotFollowARedirectFromHTTPSToHTTP(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "http://"+r.Host+"/plain", http.StatusTemporaryRedirect)
	}))
	defer srv.Close()
	c := NewClient(&Guard{AllowLoopback: true}, 5*time.Second)
	c.http.Transport.(*http.Transport).TLSClientConfig = srv.Client().Transport.(*http.Transport).TLSClientConfig
	res := c.Send(context.Background(), Endpoint{URL: srv.URL + "/hook", Key: testKey}, Message{ID: "m", Body: []byte("{}")})
	if res.Outcome != Retry || res.Err == nil || !strings.Contains(res.Err.Error(), "redirect to another host or scheme (http://") {
		t.Fatalf("Send through an https-to-http redirect = %+v", res)
	}
}

func TestParseKey(t *testing.T) {
	std := secretPrefix + base64.StdEncoding.EncodeToString(testKey)
	if k, err := ParseKey([]byte(std + "\n")); err != nil || string(k) != string(testKey) {
		t.Errorf("ParseKey(whsec_…) = %q, %v", k, err)
	}
	if k, err := ParseKey(testKey); err != nil || string(k) != string(testKey) {
		t.Errorf("ParseKey(raw) = %q, %v", k, err)
	}
	if _, err := ParseKey([]byte("short")); err == nil || !strings.Contains(err.Error(), "at least 16") {
		t.Errorf("ParseKey(short) = %v", err)
	}
	if _, err := ParseKey([]byte(secretPrefix + "!!!")); err == nil || !strings.Contains(err.Error(), "base64") {
		t.Errorf("ParseKey(bad base64) = %v", err)
	}
}

func TestBackoff(t *testing.T) {
	base, maxDelay := time.Second, 10*time.Minute
	for attempt, want := range map[int]time.Duration{1: time.Second, 2: 2 * time.Second, 5: 16 * time.Second, 12: maxDelay, 100: maxDelay} {
		for range 100 {
			d := Backoff(attempt, base, maxDelay, 0)
			if d < want/2 || d > want {
				t.Fatalf("Backoff(%d) = %v, want within [%v, %v]", attempt, d, want/2, want)
			}
		}
	}
	if d := Backoff(1, base, maxDelay, 30*time.Second); d != 30*time.Second {
		t.Errorf("Backoff under Retry-After 30s = %v", d)
	}
}

// A network error is retried, and its message (kept with the message and
// shown on the Survey) does not repeat the URL, which may hold a secret.
func TestSendNetworkErrorIsRetriedWithoutTheURL(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	url := srv.URL + "/hook?token=SECRETVALUE"
	srv.Close()
	res := loopbackClient().Send(context.Background(), Endpoint{URL: url, Key: testKey}, Message{ID: "m", Body: []byte("{}")})
	if res.Outcome != Retry || res.Err == nil || strings.Contains(res.Err.Error(), "SECRETVALUE") || !strings.Contains(res.Err.Error(), "refused") {
		t.Errorf("send to a closed port: %v %v", res.Outcome, res.Err)
	}
}
