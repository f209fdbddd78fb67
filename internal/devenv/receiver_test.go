package devenv

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cxop-dev/cxop/internal/webhook"
)

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}
func (s *syncBuffer) String() string { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

func TestReceiverVerifiesAndPrints(t *testing.T) {
	key := []byte("0123456789abcdef0123456789abcdef")
	secret := "whsec_" + base64.StdEncoding.EncodeToString(key)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	out := &syncBuffer{}
	done := make(chan error, 1)
	go func() { done <- ServeReceiver(ctx, l, secret, out) }()
	url := "http://" + l.Addr().String() + "/invitations"

	c := webhook.NewClient(&webhook.Guard{AllowLoopback: true, AllowHTTP: true}, 5*time.Second)
	res := c.Send(context.Background(), webhook.Endpoint{URL: url, Key: key}, webhook.Message{ID: "msg_1", Body: []byte(`{"type":"survey.invitation"}`)})
	if res.Outcome != webhook.Delivered || res.Status != http.StatusNoContent {
		t.Fatalf("signed webhook: %+v", res)
	}
	res = c.Send(context.Background(), webhook.Endpoint{URL: url, Key: []byte("another-key-0123456789")}, webhook.Message{ID: "msg_2", Body: []byte(`{}`)})
	if res.Status != http.StatusUnauthorized {
		t.Fatalf("wrongly signed webhook: %+v", res)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("printed %q", out.String())
	}
	var first, second struct {
		ID       string          `json:"webhookId"`
		Path     string          `json:"path"`
		Verified bool            `json:"verified"`
		Body     json.RawMessage `json:"body"`
	}
	_ = json.Unmarshal([]byte(lines[0]), &first)
	_ = json.Unmarshal([]byte(lines[1]), &second)
	if first.ID != "msg_1" || !first.Verified || first.Path != "/invitations" || string(first.Body) != `{"type":"survey.invitation"}` {
		t.Errorf("first line = %s", lines[0])
	}
	if second.ID != "msg_2" || second.Verified {
		t.Errorf("second line = %s", lines[1])
	}
}
