package collector

import (
	"context"
	"net/http"
	"sync"
	"testing"
)

// runCollector runs the collector command (Run) with o until the test
// ends or stop is called, whichever comes first, and returns once it
// answers /readyz with 200 on o.Listen. Run's error fails the test.
func runCollector(t *testing.T, o Options) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, o) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Run on %s: %v", o.Listen, err)
			}
		})
	}
	t.Cleanup(stop)
	base := "http://" + o.Listen
	waitFor(t, func() bool {
		select {
		case err := <-done:
			// Run gave up before it was ready: say why rather than wait.
			done <- err
			t.Fatalf("Run on %s ended before it was ready: %v", o.Listen, err)
		default:
		}
		resp, err := http.Get(base + "/readyz")
		return err == nil && resp.Body.Close() == nil && resp.StatusCode == http.StatusOK
	})
	return stop
}
