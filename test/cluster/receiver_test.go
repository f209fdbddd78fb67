//go:build cluster

package cluster

import (
	"encoding/json"
	"io"
	"net"
	"net/http"
	"sync"
	"testing"
)

// receiver stands in for a mailer: it listens on the node's address, which
// pods reach through the bridge, and records whom each invitation names.
type receiver struct {
	url  string
	mu   sync.Mutex
	seen map[string]bool
}

func newReceiver(t *testing.T) *receiver {
	t.Helper()
	l, err := net.Listen("tcp", net.JoinHostPort(env.nodeIP, "0"))
	if err != nil {
		t.Fatal(err)
	}
	r := &receiver{url: "http://" + l.Addr().String(), seen: map[string]bool{}}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		var inv struct {
			Customer string `json:"customer"`
			Data     struct {
				Customer string `json:"customer"`
			} `json:"data"`
		}
		_ = json.Unmarshal(body, &inv)
		r.mu.Lock()
		if inv.Customer != "" {
			r.seen[inv.Customer] = true
		}
		if inv.Data.Customer != "" {
			r.seen[inv.Data.Customer] = true
		}
		r.mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	})}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { _ = srv.Close() })
	return r
}

func (r *receiver) customers() map[string]bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[string]bool, len(r.seen))
	for k, v := range r.seen {
		out[k] = v
	}
	return out
}
