package collector

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/spf13/cobra"

	"github.com/cxop-dev/cxop/internal/customerdata"
	"github.com/cxop-dev/cxop/internal/pseudonym"
	"github.com/cxop-dev/cxop/internal/survey/engine"
)

// Customer data: an access request (GET /v1/customers/{id}), an erasure
// (DELETE /v1/customers/{id}) and the audit log of erasures (GET
// /v1/erasures), with a customer-data token only (docs/collector.md).

func (s *Server) customerRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET /v1/customers/{id}", s.showCustomer)
	mux.HandleFunc("DELETE /v1/customers/{id}", s.eraseCustomer)
	mux.HandleFunc("GET /v1/erasures", s.erasures)
}

// storedCustomerIDs are the ids under which a customer's data may be
// stored. Every customer id that reaches the customer-data endpoints goes
// through it: the id itself, and, whenever the secrets file holds a
// customer id key, the keyed hash stored in the id's place while
// pseudonymizeCustomers is (or was) on, and the hash under the previous
// key (customerIDKeyPrevious) after a rotation. Data stored under any of
// them stays until it expires, whatever the setting says now, and an
// erasure must not leave it behind (the operator keeps the key in the
// secrets file after pseudonymization is turned off, and the replaced key
// as the previous one, for this reason).
func (s *Server) storedCustomerIDs(id string) []string {
	ids := make([]string, 0, 3)
	if sec := s.secrets.Load(); sec != nil {
		for _, k := range []*pseudonym.Key{sec.customerKey, sec.customerKeyPrevious} {
			if k == nil {
				continue
			}
			if p := k.ID(id); !slices.Contains(ids, p) {
				ids = append(ids, p)
			}
		}
	}
	if !slices.Contains(ids, id) {
		ids = append(ids, id)
	}
	return ids
}

// authorizeCustomerData admits customer-data tokens only. A token of
// another kind is known but not allowed here: 403, saying which token is
// needed; no token or an unknown one is 401.
func (s *Server) authorizeCustomerData(w http.ResponseWriter, r *http.Request, endpoint string) bool {
	cfg := s.cfg.Load()
	sum := bearer(r)
	if sum != nil && len(cfg.customerDataTokens) > 0 && matches(sum, cfg.customerDataTokens) {
		return true
	}
	if sum != nil && s.otherToken(cfg, sum) {
		s.reject(w, endpoint, "forbidden", 403, errorBody{Error: "this token may not read or erase customer data: " +
			"GET and DELETE /v1/customers/{id} and GET /v1/erasures take a customer-data token (customerDataTokenSHA256), not an ingest or read token"})
		return false
	}
	msg := "missing bearer token: a customer-data token is required"
	switch {
	case len(cfg.customerDataTokens) == 0:
		msg = "a customer-data token is required, and the collector's config names none (customerDataTokenSHA256), so none is accepted"
	case sum != nil:
		msg = "unknown bearer token: a customer-data token is required"
	}
	w.Header().Set("WWW-Authenticate", `Bearer realm="cxop-collector"`)
	s.reject(w, endpoint, "unauthorized", 401, errorBody{Error: msg})
	return false
}

// otherToken reports whether sum is a read, touchpoint or survey token.
func (s *Server) otherToken(cfg *settings, sum []byte) bool {
	if matches(sum, cfg.readTokens) {
		return true
	}
	for _, tp := range cfg.touchpoints {
		if matches(sum, tp.tokens) {
			return true
		}
	}
	for _, sv := range cfg.surveys {
		if matches(sum, sv.tokens) {
			return true
		}
	}
	return false
}

// customerParam is the path's customer id, checked as ingest checks a
// record's customer, mapped to the id it is stored under.
func (s *Server) customerParam(w http.ResponseWriter, r *http.Request, endpoint string) (string, bool) {
	id := r.PathValue("id")
	reason := ""
	switch {
	case id == "":
		reason = "must not be empty"
	case !utf8.ValidString(id):
		reason = "is not valid UTF-8"
	case len(id) > maxCustomerLen:
		reason = fmt.Sprintf("longer than %d bytes", maxCustomerLen)
	case strings.ContainsFunc(id, unicode.IsControl):
		reason = "contains a control character"
	}
	if reason != "" {
		s.rejectField(w, endpoint, "id", reason)
		return "", false
	}
	return id, true
}

// customerHolders are the places that keep data about customers, in the
// order they are listed and erased: the records first, then the survey
// engine, so that no engine step reads a record being erased and writes
// what it derives after the engine was erased.
func (s *Server) customerHolders(w http.ResponseWriter, endpoint string, write bool) ([]customerdata.Holder, customerdata.AuditLog, bool) {
	st := s.storage()
	e := s.surveys.Load()
	if st == nil || e == nil || (write && st.Err() != nil) {
		var err error
		if st != nil && write {
			err = st.Err()
		}
		if err != nil {
			w.Header().Set("Retry-After", "30")
			s.reject(w, endpoint, "unavailable", 503, errorBody{Error: "nothing erased: the store cannot write now (" + err.Error() + "); retry later"})
			return nil, nil, false
		}
		s.unavailable(w, endpoint, nil)
		return nil, nil, false
	}
	return []customerdata.Holder{st, e}, st, true
}

// customerRequest admits a request about one customer: a customer-data
// token, a usable id, and the places that keep customer data (writable ones
// when write is set). Otherwise it has answered, and ok is false.
func (s *Server) customerRequest(w http.ResponseWriter, r *http.Request, endpoint string, write bool) (id string, holders []customerdata.Holder, audit customerdata.AuditLog, ok bool) {
	if !s.authorizeCustomerData(w, r, endpoint) {
		return "", nil, nil, false
	}
	if id, ok = s.customerParam(w, r, endpoint); !ok {
		return "", nil, nil, false
	}
	holders, audit, ok = s.customerHolders(w, endpoint, write)
	return id, holders, audit, ok
}

// erasureAnswer is the answer to DELETE /v1/customers/{id}.
type erasureAnswer struct {
	// CustomerHash is the audit log's hash of the customer.
	CustomerHash string    `json:"customerHash"`
	Time         time.Time `json:"time"`
	// Erased counts what was erased, by kind (every kind, 0 when none).
	Erased customerdata.Counts `json:"erased"`
	Total  int                 `json:"total"`
}

func (s *Server) eraseCustomer(w http.ResponseWriter, r *http.Request) {
	const endpoint = "customers"
	id, holders, audit, ok := s.customerRequest(w, r, endpoint, true)
	if !ok {
		return
	}
	// An erasure goes on when the client goes away: stopping midway would
	// leave part of the customer for a retry to find. It may take longer
	// than the server's write timeout on a large store.
	ctx := context.WithoutCancel(r.Context())
	_ = http.NewResponseController(w).SetWriteDeadline(time.Time{})
	s.erasing.Lock()
	defer s.erasing.Unlock()
	hash, err := audit.CustomerHash(id)
	if err != nil {
		s.erasureFailed(w, endpoint, err)
		return
	}
	counts := customerdata.Counts{}
	for _, k := range customerdata.AllKinds {
		counts[k] = 0
	}
	for _, stored := range s.storedCustomerIDs(id) {
		for _, h := range holders {
			n, err := h.EraseCustomer(ctx, stored)
			counts.Add(n)
			if err != nil {
				s.erasureFailed(w, endpoint, err)
				return
			}
		}
	}
	entry := customerdata.Erasure{Time: s.now().UTC(), CustomerHash: hash, Erased: maps.Clone(counts)}
	if err := audit.AppendErasure(entry); err != nil {
		s.erasureFailed(w, endpoint, err)
		return
	}
	if st := s.store.Load(); st != nil && counts.Total() > counts[customerdata.Events]+counts[customerdata.Responses] {
		st.CompactErased(engine.KeySpan())
	}
	s.log.Info("customer erased", "customer_hash", hash, "erased", counts.Total())
	writeJSON(w, 200, erasureAnswer{CustomerHash: hash, Time: entry.Time, Erased: counts, Total: counts.Total()})
}

// erasureFailed answers an erasure that stopped: what it deleted stays
// deleted, and a retry (idempotent) deletes the rest.
func (s *Server) erasureFailed(w http.ResponseWriter, endpoint string, err error) {
	s.log.Error("erase a customer", "err", err)
	w.Header().Set("Retry-After", "5")
	s.reject(w, endpoint, "unavailable", 503, errorBody{Error: "the erasure did not finish (a store error, in the collector's log); what it erased stays erased: retry, an erasure may be repeated"})
}

// customerStream writes GET /v1/customers/{id}: the answer starts with the
// first item found, so that a customer with nothing stored is a 404.
type customerStream struct {
	w       http.ResponseWriter
	id      string
	started bool
	counts  customerdata.Counts
}

func (c *customerStream) item(kind string, item json.RawMessage) error {
	if !c.started {
		c.started = true
		c.w.Header().Set("Content-Type", "application/json")
		c.w.WriteHeader(200)
		id, _ := json.Marshal(c.id)
		if _, err := fmt.Fprintf(c.w, "{\"customer\":%s,\"items\":[\n", id); err != nil {
			return err
		}
	} else if _, err := io.WriteString(c.w, ",\n"); err != nil {
		return err
	}
	c.counts[kind]++
	if _, err := fmt.Fprintf(c.w, "{\"kind\":%q,\"item\":", kind); err != nil {
		return err
	}
	if _, err := c.w.Write(item); err != nil {
		return err
	}
	_, err := io.WriteString(c.w, "}")
	return err
}

func (s *Server) showCustomer(w http.ResponseWriter, r *http.Request) {
	const endpoint = "customers"
	id, holders, _, ok := s.customerRequest(w, r, endpoint, false)
	if !ok {
		return
	}
	_ = http.NewResponseController(w).SetWriteDeadline(time.Time{})
	out := &customerStream{w: w, id: r.PathValue("id"), counts: customerdata.Counts{}}
	for _, stored := range s.storedCustomerIDs(id) {
		if err := s.listCustomer(r.Context(), holders, stored, out); err != nil {
			if !out.started {
				s.log.Error("list a customer", "err", err)
				s.unavailable(w, endpoint, nil)
				return
			}
			// The 200 is sent: abort the connection so the client sees a
			// broken answer, not a complete one.
			s.log.Error("list a customer: answer cut short", "err", err)
			panic(http.ErrAbortHandler)
		}
	}
	if !out.started {
		s.reject(w, endpoint, "not_found", 404, errorBody{Error: "nothing is stored about this customer"})
		return
	}
	counts, _ := json.Marshal(out.counts)
	_, _ = fmt.Fprintf(w, "\n],\"counts\":%s}\n", counts)
}

// listCustomer writes what each holder keeps under one stored id.
func (s *Server) listCustomer(ctx context.Context, holders []customerdata.Holder, stored string, out *customerStream) error {
	for _, h := range holders {
		if err := h.ListCustomer(ctx, stored, out.item); err != nil {
			return err
		}
	}
	return nil
}

// erasures streams the audit log as NDJSON, oldest first, from ?since=
// (RFC 3339) on.
func (s *Server) erasures(w http.ResponseWriter, r *http.Request) {
	const endpoint = "erasures"
	if !s.authorizeCustomerData(w, r, endpoint) {
		return
	}
	var since time.Time
	q := r.URL.Query()
	if field, reason := checkParams(q, "since"); field != "" {
		s.rejectField(w, endpoint, field, reason)
		return
	}
	if v := q.Get("since"); v != "" {
		t, err := time.Parse(time.RFC3339Nano, v)
		if err != nil {
			s.rejectField(w, endpoint, "since", fmt.Sprintf("%q is not an RFC 3339 time such as 2026-11-23T10:00:00Z", v))
			return
		}
		since = t
	}
	st := s.storage()
	if st == nil {
		s.unavailable(w, endpoint, nil)
		return
	}
	_ = http.NewResponseController(w).SetWriteDeadline(time.Time{})
	w.Header().Set("Content-Type", "application/x-ndjson")
	enc := json.NewEncoder(w)
	if err := st.Erasures(since, func(e customerdata.Erasure) error { return enc.Encode(e) }); err != nil {
		s.log.Error("audit log cut short", "err", err)
		panic(http.ErrAbortHandler)
	}
}

// pruneErasures drops the audit log's entries older than the retention.
func (s *Server) pruneErasures() {
	st := s.storage()
	if st == nil || st.Err() != nil {
		return
	}
	if err := st.PruneErasures(s.now().Add(-s.cfg.Load().retention)); err != nil {
		s.log.Error("prune the erasure audit log", "err", err)
	}
}

// NewCustomerCommand returns `cxop customer`: show or erase everything a
// collector keeps about one customer.
func NewCustomerCommand() *cobra.Command {
	var collectorURL, tokenFile string
	cmd := &cobra.Command{
		Use:   "customer",
		Short: "Show or erase everything a collector stores about one customer",
	}
	f := cmd.PersistentFlags()
	f.StringVar(&collectorURL, "collector", "", "the collector's base URL (required)")
	f.StringVar(&tokenFile, "token-file", "", "file holding a customer-data token (the Secret cxop-customer-data-token) (required)")
	_ = cmd.MarkPersistentFlagRequired("collector")
	_ = cmd.MarkPersistentFlagRequired("token-file")
	run := func(method string) func(*cobra.Command, []string) error {
		return func(cmd *cobra.Command, args []string) error {
			token, err := os.ReadFile(tokenFile)
			if err != nil {
				return fmt.Errorf("--token-file: %w", err)
			}
			return customerRequest(cmd.Context(), &http.Client{Timeout: 10 * time.Minute}, method, collectorURL, strings.TrimSpace(string(token)), args[0], cmd.OutOrStdout())
		}
	}
	cmd.AddCommand(&cobra.Command{
		Use:   "show ID",
		Short: "Print everything the collector stores about the customer, as JSON",
		Args:  cobra.ExactArgs(1),
		RunE:  run(http.MethodGet),
	}, &cobra.Command{
		Use:   "erase ID",
		Short: "Erase everything the collector stores about the customer, and print what was erased",
		Long: `erase deletes the customer's records, invitations, contact history, messages,
detractors and follow-ups, durably, and records the erasure in the audit log
(GET /v1/erasures). Running it again erases nothing more and answers zeros.`,
		Args: cobra.ExactArgs(1),
		RunE: run(http.MethodDelete),
	})
	return cmd
}

// customerRequest sends GET or DELETE /v1/customers/{id} and copies the
// answer to out.
func customerRequest(ctx context.Context, client *http.Client, method, baseURL, token, id string, out io.Writer) error {
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimSuffix(baseURL, "/")+"/v1/customers/"+url.PathEscape(id), nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		data, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		if resp.StatusCode == 404 && method == http.MethodGet {
			return errors.New("the collector stores nothing about this customer")
		}
		return fmt.Errorf("collector answered %d: %s", resp.StatusCode, strings.TrimSpace(string(data)))
	}
	_, err = io.Copy(out, resp.Body)
	return err
}
