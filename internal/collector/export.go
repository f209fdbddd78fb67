package collector

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"mime"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/cxop-dev/cxop/internal/rollup"
)

// GET /v1/export streams a subject's stored records, or one customer's
// among them, as NDJSON (as stored) or CSV (a fixed header per kind, text
// cells neutralised against spreadsheet formulas). docs/collector.md
// documents it.

// Export formats.
const (
	formatNDJSON = "ndjson"
	formatCSV    = "csv"
)

// csvColumns are the CSV header of each kind of record: the fields of the
// stored record (eventOut, responseOut). An interaction's contact is not
// part of the record, nor of its export.
var csvColumns = map[rollup.Kind][]string{
	rollup.KindTouchpoint: {"id", "time", "customer", "touchpoint", "waitSeconds", "handleSeconds", "resolved", "segment"},
	rollup.KindSurvey:     {"id", "time", "customer", "survey", "score", "comment"},
}

// exportedRecord reads either kind of stored record. Fields a record of
// an older version lacks are left empty.
type exportedRecord struct {
	ID            string   `json:"id"`
	Time          string   `json:"time"`
	Customer      string   `json:"customer"`
	Touchpoint    string   `json:"touchpoint"`
	WaitSeconds   *float64 `json:"waitSeconds"`
	HandleSeconds *float64 `json:"handleSeconds"`
	Resolved      *bool    `json:"resolved"`
	Segment       string   `json:"segment"`
	Survey        string   `json:"survey"`
	Score         *int     `json:"score"`
	Comment       string   `json:"comment"`
}

// row fills row (len(csvColumns[kind])) with the record's cells.
func (r *exportedRecord) row(kind rollup.Kind, row []string) {
	row[0], row[1], row[2] = textCell(r.ID), textCell(r.Time), textCell(r.Customer)
	if kind == rollup.KindSurvey {
		row[3], row[4], row[5] = textCell(r.Survey), "", textCell(r.Comment)
		if r.Score != nil {
			row[4] = strconv.Itoa(*r.Score)
		}
		return
	}
	row[3], row[4], row[5], row[6], row[7] = textCell(r.Touchpoint), numberCell(r.WaitSeconds), numberCell(r.HandleSeconds), "", textCell(r.Segment)
	if r.Resolved != nil {
		row[6] = strconv.FormatBool(*r.Resolved)
	}
}

// textCell neutralises a cell a spreadsheet would read as a formula: one
// that starts with =, +, -, @, a tab or a carriage return gets a leading
// single quote (OWASP's CSV injection advice), which spreadsheets show as
// text. Only text cells need it: the numbers cxop writes (seconds, scores)
// are never negative, and true, false and times never start so.
func textCell(s string) string {
	if s != "" && strings.IndexByte("=+-@\t\r", s[0]) >= 0 {
		return "'" + s
	}
	return s
}

// numberCell writes a number in plain decimal notation, never with an
// exponent, which spreadsheets and CSV readers all read back exactly.
func numberCell(f *float64) string {
	if f == nil {
		return ""
	}
	return strconv.FormatFloat(*f, 'f', -1, 64)
}

// exportFormat is the format a request asks for: the format parameter,
// else the Accept header (text/csv preferred over NDJSON by its q-value),
// else NDJSON. It returns "" and the reason for an unknown format.
func exportFormat(r *http.Request) (string, string) {
	if f, ok := r.URL.Query()["format"]; ok {
		switch v := strings.ToLower(f[0]); v {
		case formatNDJSON, formatCSV:
			return v, ""
		default:
			return "", fmt.Sprintf("%q is not one of ndjson, csv", f[0])
		}
	}
	csvQ, ndjsonQ := acceptQ(r.Header.Values("Accept"))
	if csvQ > ndjsonQ {
		return formatCSV, ""
	}
	return formatNDJSON, ""
}

// acceptQ reads the q-values an Accept header gives CSV and NDJSON; a
// wildcard counts for NDJSON, the default.
func acceptQ(headers []string) (csvQ, ndjsonQ float64) {
	for _, h := range headers {
		for _, part := range strings.Split(h, ",") {
			mt, params, err := mime.ParseMediaType(strings.TrimSpace(part))
			if err != nil {
				continue
			}
			q := 1.0
			if v, ok := params["q"]; ok {
				if q, err = strconv.ParseFloat(v, 64); err != nil || q < 0 || q > 1 {
					continue
				}
			}
			switch mt {
			case "text/csv":
				csvQ = max(csvQ, q)
			case "application/x-ndjson", "application/ndjson", "application/*", "*/*":
				ndjsonQ = max(ndjsonQ, q)
			}
		}
	}
	return csvQ, ndjsonQ
}

func (s *Server) export(w http.ResponseWriter, r *http.Request) {
	if !s.authorizeRead(w, r, "export") {
		return
	}
	st := s.storage()
	if st == nil {
		writeJSON(w, 503, errorBody{Error: "the collector is not ready"})
		return
	}
	q := r.URL.Query()
	kind, name := rollup.KindTouchpoint, q.Get("touchpoint")
	if sv := q.Get("survey"); sv != "" {
		kind, name = rollup.KindSurvey, sv
	}
	if name == "" || (q.Get("touchpoint") != "" && q.Get("survey") != "") {
		writeJSON(w, 400, errorBody{Error: "touchpoint or survey: name exactly one subject to export", Field: "touchpoint"})
		return
	}
	if !s.exportable(w, r, st, q, kind, name) {
		return
	}
	format, reason := exportFormat(r)
	if reason != "" {
		s.rejectField(w, "export", "format", reason)
		return
	}
	// match selects the records to export: every one, or one customer's.
	// The customer is looked up under every id its records may carry
	// (storedCustomerIDs): its pseudonym and the id as given.
	var match func(customer string) bool
	if c, ok := q["customer"]; ok {
		if _, ierr := (&validator{}).text(recordIndexWhole, "customer", &c[0], true, maxCustomerLen); ierr != nil {
			s.rejectField(w, "export", "customer", ierr.Reason)
			return
		}
		ids := s.storedCustomerIDs(c[0])
		match = func(customer string) bool { return slices.Contains(ids, customer) }
	}
	// The answer's format may follow the Accept header.
	w.Header().Add("Vary", "Accept")
	// An export may take longer than the server's write timeout.
	_ = http.NewResponseController(w).SetWriteDeadline(time.Time{})
	var err error
	if format == formatCSV {
		err = exportCSV(r.Context(), w, st, kind, name, match)
	} else {
		err = exportNDJSON(r.Context(), w, st, kind, name, match)
	}
	if err != nil {
		// The 200 is already sent: abort the connection so the client sees
		// a broken stream, not a clean end of a partial export.
		s.log.Error("export cut short", "err", err)
		panic(http.ErrAbortHandler)
	}
}

// exportNDJSON writes each record as stored, one per line, without the
// contact that interactions stored before contacts moved out of records
// still carry.
func exportNDJSON(ctx context.Context, w http.ResponseWriter, st Storage, kind rollup.Kind, name string, match func(string) bool) error {
	w.Header().Set("Content-Type", "application/x-ndjson")
	return st.Export(ctx, kind, name, func(js []byte) error {
		if match != nil {
			var rec struct {
				Customer string `json:"customer"`
			}
			if err := json.Unmarshal(js, &rec); err != nil {
				return fmt.Errorf("stored record: %w", err)
			}
			if !match(rec.Customer) {
				return nil
			}
		}
		if kind == rollup.KindTouchpoint {
			js = withoutContact(js)
		}
		if _, err := w.Write(js); err != nil {
			return err
		}
		_, err := w.Write([]byte{'\n'})
		return err
	})
}

// exportCSV writes the kind's header and one row per record, through the
// csv package's small buffer: memory stays the same whatever the export's
// size. Rows end with LF (the csv package's CRLF mode would turn a
// comment's own line breaks into CRLF and drop a lone CR).
func exportCSV(ctx context.Context, w http.ResponseWriter, st Storage, kind rollup.Kind, name string, match func(string) bool) error {
	h := w.Header()
	h.Set("Content-Type", "text/csv; charset=utf-8; header=present")
	field := "touchpoint"
	if kind == rollup.KindSurvey {
		field = "survey"
	}
	// Subject names are DNS labels: nothing to escape in the file name.
	h.Set("Content-Disposition", fmt.Sprintf(`attachment; filename="%s-%s.csv"`, field, name))
	h.Set("X-Content-Type-Options", "nosniff")
	cw := csv.NewWriter(w)
	columns := csvColumns[kind]
	if err := cw.Write(columns); err != nil {
		return err
	}
	row := make([]string, len(columns))
	err := st.Export(ctx, kind, name, func(js []byte) error {
		var rec exportedRecord
		if err := json.Unmarshal(js, &rec); err != nil {
			return fmt.Errorf("stored record: %w", err)
		}
		if match != nil && !match(rec.Customer) {
			return nil
		}
		rec.row(kind, row)
		return cw.Write(row)
	})
	if err != nil {
		return err
	}
	cw.Flush()
	return cw.Error()
}
