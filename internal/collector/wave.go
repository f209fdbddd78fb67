package collector

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/spf13/cobra"

	"github.com/cxop-dev/cxop/internal/collectorapi"
	"github.com/cxop-dev/cxop/internal/survey/engine"
)

// wave answers POST /v1/waves: a scheduled wave (or one part of it) asks
// its audience, with the survey's token, under the same sampling and
// contact budget as interactions.
func (s *Server) wave(w http.ResponseWriter, r *http.Request) {
	const endpoint = "waves"
	e, allowed, ok := s.surveyCaller(w, r, endpoint)
	if !ok {
		return
	}
	held, err := s.inflight.readBody(w, r)
	defer held.Release()
	if err != nil {
		s.rejectBody(w, endpoint, err, fmt.Sprintf("body larger than %d bytes; send the audience in parts", MaxBodyBytes))
		return
	}
	if !utf8.Valid(held.data) {
		// encoding/json would replace the bad bytes with U+FFFD, turning
		// one customer id into another; the ingest endpoints refuse them.
		s.reject(w, endpoint, "invalid", 400, errorBody{Error: "malformed JSON: not valid UTF-8"})
		return
	}
	var req collectorapi.WaveRequest
	dec := json.NewDecoder(bytes.NewReader(held.data))
	dec.DisallowUnknownFields()
	err = dec.Decode(&req)
	if err == nil {
		// One JSON object and nothing after it, as the ingest endpoints
		// require: trailing bytes are a client bug, not to be ignored.
		if _, tail := dec.Token(); tail != io.EOF {
			err = errors.New("data after the JSON object")
		}
	}
	if err != nil {
		s.reject(w, endpoint, "invalid", 400, errorBody{Error: "malformed JSON: " + jsonReason(err)})
		return
	}
	if path, repeated := repeatedKey(held.data); repeated {
		s.rejectField(w, endpoint, path, repeatedKeyReason)
		return
	}
	bad := func(field, format string, args ...any) {
		s.rejectField(w, endpoint, field, fmt.Sprintf(format, args...))
	}
	switch {
	case req.Survey == "":
		bad("survey", "is required")
		return
	case !allowed[req.Survey]:
		s.reject(w, endpoint, "forbidden", 403, errorBody{Error: fmt.Sprintf("the token may not send waves of survey %q", req.Survey), Field: "survey"})
		return
	case req.Wave == "" || len(req.Wave) > maxIDLen:
		bad("wave", "is required, at most %d bytes", maxIDLen)
		return
	case len(req.Audience) > engine.MaxWaveMembers:
		bad("audience", "%d customers in one request, at most %d: send the audience in parts", len(req.Audience), engine.MaxWaveMembers)
		return
	}
	var v validator
	cfg := s.cfg.Load()
	audience := make([]engine.Member, len(req.Audience))
	for i, m := range req.Audience {
		if err := v.member(i, m); err != nil {
			bad(fmt.Sprintf("audience[%d].%s", i, err.Field), "%s", err.Reason)
			return
		}
		audience[i] = engine.Member{Customer: cfg.pseudonymize(m.Customer)}
		if m.Contact != nil {
			audience[i].Contact = &engine.Contact{Email: m.Contact.Email, Phone: m.Contact.Phone}
		}
	}
	isNew, err := e.Wave(req.Survey, req.Wave, audience)
	if err != nil {
		s.log.Error("wave", "survey", req.Survey, "err", err)
		w.Header().Set("Retry-After", "5")
		s.reject(w, endpoint, "unavailable", 503, errorBody{Error: "wave not stored; retry with the same wave id"})
		return
	}
	writeJSON(w, 200, map[string]any{"survey": req.Survey, "wave": req.Wave, "audience": len(req.Audience), "duplicate": !isNew})
}

// member checks one customer of a wave's audience by the rules the ingest
// endpoints apply to an interaction's customer and contact.
func (v *validator) member(i int, m collectorapi.Member) *inputError {
	if _, err := v.text(i, "customer", &m.Customer, true, maxCustomerLen); err != nil {
		return err
	}
	if m.Contact == nil {
		return nil
	}
	return v.contact(i, optional(m.Contact.Email), optional(m.Contact.Phone))
}

// optional is s as an optional JSON field: an audience leaves out what it
// does not know as "".
func optional(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

// NewWaveCommand returns `cxop survey-wave`, which a Survey's CronJob runs.
func NewWaveCommand() *cobra.Command {
	var collectorURL, survey, tokenFile, audienceFile, wave string
	cmd := &cobra.Command{
		Use:   "survey-wave",
		Short: "Send one scheduled wave of a survey to its audience",
		Long: `survey-wave reads the audience file (a JSON array of {"customer","contact"}
objects, or one "customer-id[,email[,phone]]" per line) and asks the collector
to invite it under the survey's sampling and contact budget. --wave names the
wave: running it again with the same name invites no one twice.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			token, err := os.ReadFile(tokenFile)
			if err != nil {
				return fmt.Errorf("--token-file: %w", err)
			}
			data, err := os.ReadFile(audienceFile)
			if err != nil {
				return fmt.Errorf("--audience: %w", err)
			}
			audience, err := collectorapi.ParseAudience(data)
			if err != nil {
				return fmt.Errorf("--audience %s: %w", audienceFile, err)
			}
			sent, dup, err := collectorapi.SendWave(cmd.Context(), &http.Client{Timeout: 30 * time.Second}, collectorURL, strings.TrimSpace(string(token)), survey, wave, audience)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "wave %s of survey %s: %d customers handed to the collector, %d already taken by an earlier run\n", wave, survey, sent, dup)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&collectorURL, "collector", "", "the collector's base URL (required)")
	f.StringVar(&survey, "survey", "", "the Survey's name (required)")
	f.StringVar(&tokenFile, "token-file", "", "file holding the Survey's token (required)")
	f.StringVar(&audienceFile, "audience", "", "the audience file (required)")
	f.StringVar(&wave, "wave", "", "the wave's name, unique per run, such as the Job's name (required)")
	for _, n := range []string{"collector", "survey", "token-file", "audience", "wave"} {
		_ = cmd.MarkFlagRequired(n)
	}
	return cmd
}
