package collector

import (
	"bytes"
	"encoding/json"
	"reflect"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/cxop-dev/cxop/internal/collectorapi"
	"github.com/cxop-dev/cxop/internal/store"
)

// FuzzIngestBody feeds arbitrary bodies to the ingest decoder and
// validator (the corpus is in testdata/fuzz/FuzzIngestBody). Whatever the
// body, the answer is a list of valid records or one 4xx naming why; the
// one-pass decoder and the per-record path agree; the repeated-key
// scanner agrees with encoding/json's tokenizer; the plain decoder
// (decodeEventsPlain) accepts only bodies the one-pass decoder reads the
// same way; an accepted record's
// stored JSON is valid and is accepted again as itself; and no body with
// a repeated key is accepted.
func FuzzIngestBody(f *testing.F) {
	for _, seed := range []string{
		`{"id":"a","touchpoint":"chat","customer":"c1","time":"2026-11-23T10:00:00Z","waitSeconds":30}`,
		`[{"id":"a","touchpoint":"chat","customer":"c1","resolved":true,"handleSeconds":420,"segment":"gold","contact":{"email":"a@example.com","phone":"+49 30 1"}},{"id":"b","touchpoint":"chat","customer":"c2"}]`,
		"{\"id\":\"a\",\"touchpoint\":\"chat\",\"customer\":\"c\"}\n{\"id\":\"b\",\"touchpoint\":\"chat\",\"customer\":\"c\"}\n",
		`{"id":"a","touchpoint":"chat","customer":"c","customer":"d"}`,
		`{"id":"a","touchpoint":"chat","customer":"c","contact":{"email":"x@y","Email":"z@y"}}`,
		`{"id":"r","survey":"nps","customer":"c","score":9,"comment":"ok"}`,
		`[]`, `null`, `[null]`, `{"id":7}`, `{"waitSeconds":1e400}`, "{\"id\":\"\xff\"}",
		// Edges of the plain decoder: each is read by the general one, or refused.
		`{"ID":"a","touchpoint":"chat","customer":"c"}`, `{"id":"a\u0062","touchpoint":"chat","customer":"c"}`,
		`{"id":"a","touchpoint":"chat","customer":"c","waitSeconds":01}`, `{"id":"a","touchpoint":"chat","customer":"c","waitSeconds":-0.0e-0}`,
		`{"id":"a","touchpoint":"chat","customer":"c","waitSeconds":1.}`, `{"id":"a","touchpoint":"chat","customer":"c","resolved":nul}`,
		`{"id":null,"id":"a","touchpoint":"chat","customer":"c"}`, `{"id":"a","touchpoint":"chat","customer":"c","contact":null,"segment":null}`,
		` [ {"id":"a","touchpoint":"chat","customer":"c"} , {} ] `, `[{"id":"a","touchpoint":"chat","customer":"c"},]`,
		"\u00a0{\"id\":\"a\",\"touchpoint\":\"chat\",\"customer\":\"c\"}", `{"id":"a","touchpoint":"chat","customer":"c"}{}`,
	} {
		f.Add([]byte(seed), false)
		f.Add([]byte(seed), true)
	}
	cfg, err := parseConfig([]byte(`
touchpoints: [{name: chat, waitThreshold: 2m, tokenSHA256: ["` + collectorapi.HashToken(chatToken) + `"]}]
surveys: [{name: nps, type: NPS, tokenSHA256: ["` + collectorapi.HashToken(npsToken) + `"]}]`))
	if err != nil {
		f.Fatal(err)
	}
	newValidator := func() *validator {
		return &validator{cfg: cfg, now: testNow, authorized: func(string) bool { return true }, seen: map[string]int{}}
	}
	validate := func(body []byte, responses bool) ([]store.Record, *inputError) {
		v := newValidator()
		if responses {
			return validateAll(body, nil, v.response)
		}
		return validateAll(body, decodeEventsPlain, v.event)
	}
	f.Fuzz(func(t *testing.T, body []byte, responses bool) {
		if len(body) > MaxBodyBytes {
			return
		}
		if _, err := splitRecords(body); utf8.Valid(body) && (err == nil || json.Valid(body)) {
			// On what the decoder reads (one value, or NDJSON, in UTF-8:
			// ingest refuses anything else), the scanner finds the
			// repeated key a tokenizer finds.
			got, found := repeatedKey(body)
			if want, wantFound := repeatedKeyByTokens(body); wantFound != found || want != got {
				t.Fatalf("repeated key: scanner %q %v, tokenizer %q %v", got, found, want, wantFound)
			}
		}
		if plain, ok := decodeEventsPlain(body); ok {
			// The plain decoder takes only what the general one reads the
			// same way, with no key repeated.
			general, gok := decodeStream[eventIn](body)
			if _, repeated := repeatedKey(body); !gok || repeated || !reflect.DeepEqual(plain, general) {
				t.Fatalf("plain decoder read %s, the general one %s (ok %v, repeated key %v)", dumpEvents(plain), dumpEvents(general), gok, repeated)
			}
		}
		records, ierr := validate(body, responses)
		if ierr != nil {
			if ierr.status < 400 || ierr.status > 499 || ierr.Reason == "" {
				t.Fatalf("refused with %d %q", ierr.status, ierr.Error())
			}
			return
		}
		if len(records) == 0 || len(records) > MaxRecords {
			t.Fatalf("accepted %d records", len(records))
		}
		if path, repeated := repeatedKey(body); repeated {
			t.Fatalf("accepted a body that repeats %s", path)
		}
		if ins, ok := decodeStream[eventIn](body); ok && !responses {
			raws, ierr := splitRecords(body)
			if ierr != nil || len(raws) != len(ins) {
				t.Fatalf("one-pass decoder read %d records, per-record path %d (%v)", len(ins), len(raws), ierr)
			}
			for i, raw := range raws {
				var slow eventIn
				if err := decodeStrict(i, raw, &slow); err != nil || !reflect.DeepEqual(ins[i], &slow) {
					t.Fatalf("record %d: one pass %+v, per record %+v (%v)", i, ins[i], slow, err)
				}
			}
		}
		for i, r := range records {
			if !json.Valid(r.JSON) || r.Fingerprint == 0 {
				t.Fatalf("record %d stored as %q with fingerprint %d", i, r.JSON, r.Fingerprint)
			}
			again, ierr := validate(r.JSON, responses)
			if ierr != nil {
				t.Fatalf("record %d's stored JSON %s is refused: %v", i, r.JSON, ierr)
			}
			a := again[0]
			if !bytes.Equal(a.JSON, r.JSON) || a.ID != r.ID || a.Subject != r.Subject || a.Event != r.Event || a.Response != r.Response {
				t.Fatalf("record %d changes when sent again:\n%s\n%s", i, r.JSON, a.JSON)
			}
			if at := time.Unix(0, r.Event.Time+r.Response.Time); at.After(testNow.Add(futureTolerance)) || at.Before(testNow.Add(-cfg.retention)) {
				t.Fatalf("record %d at %s, outside what ingest takes", i, at)
			}
		}
	})
}

func dumpEvents(ins []*eventIn) string {
	b, _ := json.Marshal(ins)
	return string(b)
}
