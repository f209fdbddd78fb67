package localcollector

import (
	"context"
	"encoding/base64"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/cxop-dev/cxop/internal/collectorapi"
	"github.com/cxop-dev/cxop/internal/pgtest"
)

// TestCollectorsOnPostgres runs local collectors (the real binary) on
// PostgreSQL, as `cxop dev --store postgres` does: each namespace gets a
// database of its own, records land there, and a config with surveys is
// refused with the reason in the collector's log.
func TestCollectorsOnPostgres(t *testing.T) {
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(t.TempDir(), "cxop")
	build := exec.Command("go", "build", "-o", bin, ".")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build cxop: %v\n%s", err, out)
	}
	server := pgtest.Start(t)
	dsnFile := filepath.Join(t.TempDir(), "dsn")
	if err := os.WriteFile(dsnFile, []byte(server.DSN("postgres")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	rt, err := New(t.TempDir(), bin)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(rt.Stop)
	if err := rt.UsePostgres(dsnFile); err != nil {
		t.Fatal(err)
	}
	const token, read = "chat-token-0123456789", "read-token-0123456789"
	cfg := fmt.Sprintf("touchpoints:\n  - name: chat\n    tokenSHA256: [%s]\nreadTokenSHA256: [%s]\n", collectorapi.HashToken(token), collectorapi.HashToken(read))
	secrets := []byte("linkKeys: {current: " + base64.StdEncoding.EncodeToString([]byte(strings.Repeat("L", 32))) + "}\n")
	ctx := context.Background()
	for _, ns := range []string{"team-a", "team-b"} {
		url, err := rt.Ensure(ctx, ns, collectorapi.Files{Config: []byte(cfg), Secrets: secrets})
		if err != nil {
			log, _ := os.ReadFile(filepath.Join(rt.dir, ns, "collector.log"))
			t.Fatalf("%v\n%s", err, log)
		}
		if err := WaitAnswering(ctx, url+"/readyz", nil); err != nil {
			t.Fatalf("%s: %v", ns, err)
		}
		req, _ := http.NewRequest("POST", url+"/v1/events", strings.NewReader(fmt.Sprintf(`{"id":"e-%s","touchpoint":"chat","customer":"c1"}`, ns)))
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("%s: ingest %d", ns, resp.StatusCode)
		}
	}
	for _, ns := range []string{"team-a", "team-b"} {
		conn, err := pgx.Connect(ctx, server.DSN(DatabaseName(ns)))
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		rows, _ := conn.Query(ctx, `SELECT id FROM cxop_records`)
		ids, err = pgx.CollectRows(rows, pgx.RowTo[string])
		_ = conn.Close(ctx)
		if err != nil || len(ids) != 1 || ids[0] != "e-"+ns {
			t.Errorf("database %s holds %v (%v), want only e-%s", DatabaseName(ns), ids, err, ns)
		}
	}
	surveys := fmt.Sprintf("surveys:\n  - name: nps\n    type: NPS\n    tokenSHA256: [%s]\nreadTokenSHA256: [%s]\n", collectorapi.HashToken(token), collectorapi.HashToken(read))
	sctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	// Surveys run on PostgreSQL too: the collector starts and answers.
	url, err := rt.Ensure(sctx, "team-c", collectorapi.Files{Config: []byte(surveys), Secrets: secrets})
	if err != nil {
		t.Fatalf("a config with surveys: %v", err)
	}
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		resp, err := http.Get(url + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(rt.dir, "team-c", "collector.log"))
			t.Fatalf("team-c with a survey never became ready (%v); its log:\n%s", err, log)
		}
	}
}
