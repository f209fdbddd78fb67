//go:build cluster

package cluster

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/cxop-dev/cxop/internal/pgtest"
)

// The namespace whose collectors keep their records in PostgreSQL.
const (
	pgNS         = "shop-pg"
	pgTouchpoint = "pg-chat"
	pgSecret     = "cxop-postgres"
	pgDatabase   = "cx_shop_pg"
)

// clusterPG is the PostgreSQL the tier started, stopped when TestCluster ends.
var clusterPG *nodePostgres

// nodePostgres is a PostgreSQL server running on the cluster's node, as a
// database outside the cluster would be: Debian's server binaries, run as
// the postgres user with its data in a temporary directory, listening on the
// node IP alone (reachable from Pods through the node, from nothing else),
// password authentication for every connection.
type nodePostgres struct {
	bin, dir, password string
	port               int
	cred               *syscall.Credential
}

func startNodePostgres(t *testing.T) *nodePostgres {
	t.Helper()
	bin, err := pgtest.FindBin()
	if err != nil {
		t.Fatal(err)
	}
	p := &nodePostgres{bin: bin, password: randomHex(t)}
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			t.Fatalf("PostgreSQL refuses to run as root and there is no postgres user: %v", err)
		}
		uid, _ := strconv.ParseUint(u.Uid, 10, 32)
		gid, _ := strconv.ParseUint(u.Gid, 10, 32)
		p.cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), NoSetGroups: true}
	}
	// Under /tmp, which the server's user can reach (t.TempDir's parent is
	// private to root); a short path keeps the socket's under 107 bytes.
	if p.dir, err = os.MkdirTemp("/tmp", "cxop-cluster-pg-"); err != nil {
		t.Fatal(err)
	}
	if err := p.chown(p.dir); err != nil {
		p.remove()
		t.Fatal(err)
	}
	pwfile := filepath.Join(p.dir, "pwfile")
	if err := os.WriteFile(pwfile, []byte(p.password+"\n"), 0o600); err == nil {
		err = p.chown(pwfile)
	}
	if err != nil {
		p.remove()
		t.Fatal(err)
	}
	if out, err := p.run("initdb", "-D", p.data(), "-U", "postgres", "--pwfile", pwfile, "-A", "scram-sha-256",
		"-E", "UTF8", "--no-locale", "--no-instructions"); err != nil {
		p.remove()
		t.Fatalf("initdb: %v\n%s", err, out)
	}
	// Password authentication for the node (the test) and the Pods alone.
	hba := fmt.Sprintf("local all all scram-sha-256\nhost all all %s/32 scram-sha-256\nhost all all 10.244.0.0/24 scram-sha-256\n", env.nodeIP)
	if err := os.WriteFile(filepath.Join(p.data(), "pg_hba.conf"), []byte(hba), 0o600); err != nil {
		p.remove()
		t.Fatal(err)
	}
	// A port free on the node IP now; the cluster runs nothing else that
	// binds ports at this point of the tier.
	l, err := net.Listen("tcp", net.JoinHostPort(env.nodeIP, "0"))
	if err != nil {
		p.remove()
		t.Fatal(err)
	}
	p.port = l.Addr().(*net.TCPAddr).Port
	_ = l.Close()
	opts := strings.Join([]string{"-p", strconv.Itoa(p.port), "-k", p.dir, "-c", "listen_addresses=" + env.nodeIP,
		"-c", "fsync=on", "-c", "synchronous_commit=on", "-c", "max_connections=100", "-c", "shared_buffers=32MB"}, " ")
	if out, err := p.run("pg_ctl", "-D", p.data(), "-l", filepath.Join(p.dir, "server.log"), "-o", opts, "-w", "-t", "60", "start"); err != nil {
		log, _ := os.ReadFile(filepath.Join(p.dir, "server.log"))
		p.remove()
		t.Fatalf("pg_ctl start: %v\n%s\n%s", err, out, log)
	}
	return p
}

func (p *nodePostgres) data() string { return filepath.Join(p.dir, "data") }

func (p *nodePostgres) chown(path string) error {
	if p.cred == nil {
		return nil
	}
	return os.Chown(path, int(p.cred.Uid), int(p.cred.Gid))
}

func (p *nodePostgres) run(prog string, args ...string) ([]byte, error) {
	cmd := exec.Command(filepath.Join(p.bin, prog), args...)
	cmd.Dir = p.dir
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	if p.cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: p.cred}
	}
	return cmd.CombinedOutput()
}

// dsn is the connection string of a database on the node, over TCP with a
// password, as a Pod uses it.
func (p *nodePostgres) dsn(user, password, db string) string {
	return fmt.Sprintf("host=%s port=%d user=%s password=%s dbname=%s sslmode=disable", env.nodeIP, p.port, user, password, db)
}

// stop stops the server (fast shutdown: clients are disconnected) and
// removes its directory.
func (p *nodePostgres) stop(t *testing.T) {
	if out, err := p.run("pg_ctl", "-D", p.data(), "-m", "fast", "-w", "-t", "60", "stop"); err != nil {
		t.Errorf("stop the node's PostgreSQL: %v\n%s", err, out)
	}
	p.remove()
}

func (p *nodePostgres) remove() { _ = os.RemoveAll(p.dir) }

// createDatabase makes a role that owns a new database, as the README
// asks of a platform team, and returns the role's connection string.
func (p *nodePostgres) createDatabase(t *testing.T, name string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, p.dsn("postgres", p.password, "postgres"))
	if err != nil {
		t.Fatalf("connect to the node's PostgreSQL: %v", err)
	}
	defer func() { _ = conn.Close(ctx) }()
	password := randomHex(t)
	for _, sql := range []string{
		fmt.Sprintf("CREATE ROLE %s LOGIN PASSWORD '%s'", name, password),
		fmt.Sprintf("CREATE DATABASE %s OWNER %s", name, name),
	} {
		if _, err := conn.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", strings.SplitN(sql, " PASSWORD", 2)[0], err)
		}
	}
	return p.dsn(name, password, name)
}

func randomHex(t *testing.T) string {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// testPostgresReplicaDeleted runs a namespace on PostgreSQL: a Deployment of
// two collector replicas behind the namespace's Service. One replica is
// deleted while clients send batches through the Service, resending the
// unanswered ones with the same ids; once the Deployment is back at two
// ready replicas, every acknowledged id is stored and counted exactly once.
func testPostgresReplicaDeleted(t *testing.T) {
	clusterPG = startNodePostgres(t)
	dsn := clusterPG.createDatabase(t, pgDatabase)

	kubectl(t, "create", "namespace", pgNS)
	kubectl(t, "label", "namespace", pgNS, "pod-security.kubernetes.io/enforce=restricted")
	kubectl(t, "-n", pgNS, "create", "secret", "generic", pgSecret, "--from-literal=dsn="+dsn)
	kubectl(t, "annotate", "namespace", pgNS, "cx.cxop.dev/store=postgres", "cx.cxop.dev/postgres-secret="+pgSecret)
	kubectlStdin(t, fmt.Sprintf(`apiVersion: cx.cxop.dev/v1alpha1
kind: Touchpoint
metadata:
  name: %s
spec:
  channel: chat
  waitTime:
    threshold: 2m
`, pgTouchpoint), "-n", pgNS, "apply", "-f", "-")

	eventually(t, 3*time.Minute, func() error {
		_, err := readyCollectors(2, "")
		return err
	})
	before, _ := readyCollectors(2, "")
	var token, read string
	eventually(t, time.Minute, func() error {
		var err error
		if token, err = nsSecretToken(pgNS, "cxop-touchpoint-"+pgTouchpoint); err != nil {
			return err
		}
		read, err = nsSecretToken(pgNS, "cxop-collector-read-token")
		return err
	})
	url := nsIngestURL(t, pgNS, "tp", pgTouchpoint)

	// The first batch, sent until the collectors have loaded the token.
	ld := &pgLoad{url: url + "/v1/events", token: token, acked: map[string]int{}, progress: make(chan struct{}, 1)}
	first := ld.batch(0, 0)
	post(t, ld.url, token, first.body, time.Minute)
	ld.acked[first.prefix] = first.n

	const clients = 4
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	for c := range clients {
		wg.Add(1)
		go func() { defer wg.Done(); ld.client(ctx, c+1) }()
	}
	// Progress, not time, sets when the replica goes: once both replicas
	// have stored some of the load.
	ld.waitAcked(t, 20)
	for _, r := range before {
		eventually(t, time.Minute, func() error {
			if err := ld.failure(); err != nil {
				t.Fatal(err)
			}
			return storedBy(r)
		})
	}
	victim := before[0]
	ackedAtDelete := ld.ackedBatches()
	kubectl(t, "-n", pgNS, "delete", "pod", victim.name, "--wait=false")
	eventually(t, 3*time.Minute, func() error {
		if err := ld.failure(); err != nil {
			t.Fatal(err)
		}
		_, err := readyCollectors(2, victim.uid)
		return err
	})
	// Load goes on through the new replica too before it stops.
	ld.waitAcked(t, ld.ackedBatches()+20)
	after, err := readyCollectors(2, victim.uid)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range after {
		eventually(t, time.Minute, func() error {
			if err := ld.failure(); err != nil {
				t.Fatal(err)
			}
			return storedBy(r)
		})
	}
	ld.stop()
	wg.Wait()
	if err := ld.failure(); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d batches acknowledged before %s was deleted, %d in all; %d sends went unanswered and were resent",
		ackedAtDelete, victim.name, ld.ackedBatches(), ld.resent)

	// The recount, through the Service: the export holds each acknowledged
	// id once, and the summary counts what is stored.
	seen, lines := exportIDs(t, url, read)
	dup := lines - len(seen) // copies beyond the first of each id
	acked, lost := 0, 0
	for prefix, n := range ld.acked {
		acked += n
		for i := range n {
			id := fmt.Sprintf("%s-%d", prefix, i)
			if seen[id] == 0 {
				lost++
			}
			delete(seen, id)
		}
	}
	var sum struct{ Interactions *int }
	if err := json.Unmarshal(get(t, url+"/v1/summary?touchpoint="+pgTouchpoint+"&window=1h", read), &sum); err != nil || sum.Interactions == nil {
		t.Fatalf("summary: %v, interactions %v", err, sum.Interactions)
	}
	t.Logf("postgres replicas=2 deleted=1 acked=%d lost=%d dup=%d", acked, lost, dup)
	if lost != 0 || dup != 0 || len(seen) != 0 {
		t.Errorf("acked=%d lost=%d dup=%d, and %d ids stored that were never acknowledged", acked, lost, dup, len(seen))
	}
	if *sum.Interactions != acked {
		t.Errorf("the summary counts %d interactions, %d were acknowledged", *sum.Interactions, acked)
	}
	eventually(t, 90*time.Second, func() error {
		var tp struct{ Status struct{ Interactions int } }
		if err := kubectlJSONErr(&tp, "-n", pgNS, "get", "tp", pgTouchpoint); err != nil {
			return err
		}
		if tp.Status.Interactions != acked {
			return fmt.Errorf("%s shows %d interactions, want %d", pgTouchpoint, tp.Status.Interactions, acked)
		}
		return nil
	})
}

type collectorReplica struct{ name, uid, ip string }

// readyCollectors returns the namespace's collector pods once the
// Deployment has want ready replicas, every one of its pods is Ready and
// none is the pod whose UID is gone.
func readyCollectors(want int, gone string) ([]collectorReplica, error) {
	var deploy struct {
		Spec struct {
			Selector struct{ MatchLabels map[string]string }
		}
		Status struct{ ReadyReplicas, Replicas, UpdatedReplicas int }
	}
	if err := kubectlJSONErr(&deploy, "-n", pgNS, "get", "deployment", "cxop-collector"); err != nil {
		return nil, err
	}
	if deploy.Status.ReadyReplicas != want || deploy.Status.Replicas != want {
		return nil, fmt.Errorf("collector Deployment: %d of %d replicas ready, want %d", deploy.Status.ReadyReplicas, deploy.Status.Replicas, want)
	}
	var sel []string
	for k, v := range deploy.Spec.Selector.MatchLabels {
		sel = append(sel, k+"="+v)
	}
	var pods struct {
		Items []struct {
			Metadata struct {
				Name, UID         string
				DeletionTimestamp *string
			}
			Status struct {
				Conditions []condition
				PodIP      string
			}
		}
	}
	if err := kubectlJSONErr(&pods, "-n", pgNS, "get", "pods", "-l", strings.Join(sel, ",")); err != nil {
		return nil, err
	}
	var ready []collectorReplica
	for _, p := range pods.Items {
		if p.Metadata.UID == gone {
			return nil, fmt.Errorf("pod %s is still there", p.Metadata.Name)
		}
		if p.Metadata.DeletionTimestamp == nil && hasCondition(p.Status.Conditions, "Ready", "True") {
			ready = append(ready, collectorReplica{p.Metadata.Name, p.Metadata.UID, p.Status.PodIP})
		}
	}
	if len(ready) != want || len(pods.Items) != want {
		return nil, fmt.Errorf("%d collector pods, %d of them ready, want %d", len(pods.Items), len(ready), want)
	}
	return ready, nil
}

// storedBy returns nil once the replica's own metrics show it stored
// interactions of the touchpoint.
func storedBy(r collectorReplica) error {
	resp, err := httpClient.Get("http://" + net.JoinHostPort(r.ip, "9090") + "/metrics")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		return fmt.Errorf("metrics of %s: %d %v", r.name, resp.StatusCode, err)
	}
	prefix := `cxop_collector_interactions_total{touchpoint="` + pgTouchpoint + `"} `
	for _, line := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, prefix); ok {
			if n, err := strconv.ParseFloat(v, 64); err == nil && n > 0 {
				return nil
			}
		}
	}
	return fmt.Errorf("replica %s has stored no interactions of %s yet", r.name, pgTouchpoint)
}

// pgLoad is clients sending batches of events through the Service: each
// resends its batch, unchanged, until it is answered 200.
type pgLoad struct {
	url, token string

	mu      sync.Mutex
	acked   map[string]int // batch prefix -> ids acknowledged
	resent  int
	stopped bool
	failed  error
	// progress has a value after each acknowledgement or failure.
	progress chan struct{}
}

type pgBatch struct {
	prefix, body string
	n            int
}

const pgBatchSize = 50

func (l *pgLoad) batch(client, seq int) pgBatch {
	b := pgBatch{prefix: fmt.Sprintf("pg-c%d-b%d", client, seq), n: pgBatchSize}
	at := time.Now().UTC().Format(time.RFC3339)
	lines := make([]string, b.n)
	for i := range lines {
		lines[i] = fmt.Sprintf(`{"id":"%s-%d","touchpoint":%q,"customer":"c%d","time":%q,"waitSeconds":%d}`,
			b.prefix, i, pgTouchpoint, i%37, at, 30+i%200)
	}
	b.body = strings.Join(lines, "\n")
	return b
}

// loadClient opens a connection per request, so that the Service spreads
// the requests over the ready replicas (a kept-alive connection stays with
// the replica it first reached, and would never find a new one).
var loadClient = func() *http.Client {
	tr := httpClient.Transport.(*http.Transport).Clone()
	tr.DisableKeepAlives = true
	return &http.Client{Timeout: 10 * time.Second, Transport: tr}
}()

func (l *pgLoad) client(ctx context.Context, c int) {
	for seq := 0; ; seq++ {
		l.mu.Lock()
		done := l.stopped || l.failed != nil
		l.mu.Unlock()
		if done {
			return
		}
		b := l.batch(c, seq)
		// An unanswered batch is resent until answered: giving up on
		// one would leave its ids neither acknowledged nor refused.
		deadline := time.Now().Add(2 * time.Minute)
		for sends := 0; ; sends++ {
			code, accepted, msg, err := l.send(ctx, b.body)
			if err == nil && code == http.StatusOK {
				if sends == 0 && accepted != b.n {
					l.fail(fmt.Errorf("batch %s, sent once, had %d of %d ids accepted: %s", b.prefix, accepted, b.n, msg))
					return
				}
				l.mu.Lock()
				l.acked[b.prefix] = b.n
				l.resent += sends
				l.mu.Unlock()
				l.notify()
				break
			}
			if err == nil && code != http.StatusServiceUnavailable && code != http.StatusTooManyRequests &&
				code != http.StatusBadGateway && code != http.StatusGatewayTimeout {
				l.fail(fmt.Errorf("batch %s: %d %s", b.prefix, code, msg))
				return
			}
			if time.Now().After(deadline) {
				l.fail(fmt.Errorf("batch %s unanswered for 2m: %d %v %s", b.prefix, code, err, msg))
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
}

func (l *pgLoad) send(ctx context.Context, body string) (int, int, string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, l.url, strings.NewReader(body))
	if err != nil {
		return 0, 0, "", err
	}
	req.Header.Set("Authorization", "Bearer "+l.token)
	resp, err := loadClient.Do(req)
	if err != nil {
		return 0, 0, "", err
	}
	defer resp.Body.Close()
	msg, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, 0, "", err
	}
	var a struct{ Accepted int }
	if resp.StatusCode == http.StatusOK {
		if err := json.Unmarshal(msg, &a); err != nil {
			return 0, 0, "", fmt.Errorf("answer %q: %w", msg, err)
		}
	}
	return resp.StatusCode, a.Accepted, string(msg), nil
}

func (l *pgLoad) fail(err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.failed == nil {
		l.failed = err
	}
	l.notify()
}

func (l *pgLoad) notify() {
	select {
	case l.progress <- struct{}{}:
	default:
	}
}

func (l *pgLoad) failure() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.failed
}

func (l *pgLoad) stop() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.stopped = true
}

func (l *pgLoad) ackedBatches() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.acked)
}

// waitAcked waits until n batches are acknowledged, or the load failed.
func (l *pgLoad) waitAcked(t *testing.T, n int) {
	t.Helper()
	timeout := time.After(3 * time.Minute)
	for {
		if err := l.failure(); err != nil {
			t.Fatal(err)
		}
		got := l.ackedBatches()
		if got >= n {
			return
		}
		select {
		case <-l.progress:
		case <-timeout:
			t.Fatalf("after 3m: %d batches acknowledged, waiting for %d", got, n)
		}
	}
}

// exportIDs reads the touchpoint's records through the Service and counts
// each id; it returns the counts and the number of records.
func exportIDs(t *testing.T, url, read string) (map[string]int, int) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url+"/v1/export?touchpoint="+pgTouchpoint, nil)
	req.Header.Set("Authorization", "Bearer "+read)
	resp, err := (&http.Client{Timeout: 2 * time.Minute, Transport: httpClient.Transport}).Do(req)
	if err != nil {
		t.Fatalf("export: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(resp.Body)
		t.Fatalf("export: %d %s", resp.StatusCode, msg)
	}
	seen, lines := map[string]int{}, 0
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		if len(sc.Bytes()) == 0 {
			continue
		}
		var rec struct{ ID, Touchpoint string }
		if err := json.Unmarshal(sc.Bytes(), &rec); err != nil || rec.ID == "" || rec.Touchpoint != pgTouchpoint {
			t.Fatalf("export line %d %q: %v", lines+1, sc.Text(), err)
		}
		seen[rec.ID]++
		lines++
	}
	if err := sc.Err(); err != nil {
		t.Fatalf("export after %d lines: %v", lines, err)
	}
	return seen, lines
}

func nsSecretToken(ns, name string) (string, error) {
	out, err := run(env.kubectl, "", "-n", ns, "get", "secret", name, "-o", "jsonpath={.data.token}")
	if err != nil {
		return "", err
	}
	b, err := base64.StdEncoding.DecodeString(out)
	if err != nil || len(b) == 0 {
		return "", errors.Join(fmt.Errorf("secret %s/%s holds no token", ns, name), err)
	}
	return string(b), nil
}

func nsIngestURL(t *testing.T, ns, kind, name string) string {
	t.Helper()
	var url string
	eventually(t, time.Minute, func() error {
		url = strings.TrimSpace(kubectlOut(t, "-n", ns, "get", kind, name, "-o", "jsonpath={.status.ingest.url}"))
		if url == "" {
			return fmt.Errorf("%s %s has no status.ingest.url", kind, name)
		}
		return nil
	})
	return url
}
