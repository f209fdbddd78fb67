package loadgen

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"time"
)

// This file holds what both crash tests (one collector killed and
// restarted on its data directory; replicas over one database) do at
// either end of a batch's life: checking an acknowledgement, and at the
// end recounting the export and the summary against every acknowledged id.

// checkAck verifies a 200 to b: a batch never sent before must be
// accepted whole; a resent one may be partly or wholly reported as
// duplicates (stored, acknowledgement lost).
func checkAck(b *batch, a Answer, who string) error {
	if err := checkAnswer(b.prefix, a, b.n); err != nil {
		return err
	}
	if b.sends == 0 && a.Duplicates != 0 {
		return fmt.Errorf("batch %s was never sent before, yet %s reported %d of its %d ids as duplicates", b.prefix, who, a.Duplicates, b.n)
	}
	return nil
}

// Tally is what a crash test's recount found: the export, and the
// summaries, compared with every id acknowledged by a 200.
type Tally struct {
	Acked int // distinct ids acknowledged by a 200
	// Lost counts acknowledged ids missing from the export, or stored
	// records a summary does not count.
	Lost int
	// Dup counts copies of ids in the export beyond the first, or
	// interactions a summary counts beyond the stored ids.
	Dup int
	// Unexpected counts exported ids that were never sent.
	Unexpected int
	Exported   int // distinct ids in the export
	// Mismatch explains a summary count that differs from the export;
	// the larger difference is added to Lost or Dup.
	Mismatch string
}

// OK is true when nothing acknowledged was lost, nothing was stored or
// counted twice and nothing unknown appeared.
func (t Tally) OK() bool { return t.Lost == 0 && t.Dup == 0 && t.Unexpected == 0 }

func (t Tally) String() string {
	return fmt.Sprintf("acked=%d lost=%d dup=%d", t.Acked, t.Lost, t.Dup)
}

// tallyExport compares acked (batch prefix -> records) with an export's
// ids (id -> copies) of lines lines.
func tallyExport(acked, seen map[string]int, lines int) Tally {
	t := Tally{Exported: len(seen), Dup: lines - len(seen)}
	for prefix, n := range acked {
		t.Acked += n
		for i := range n {
			id := ID(prefix, i)
			if seen[id] == 0 {
				t.Lost++
			}
			delete(seen, id)
		}
	}
	t.Unexpected = len(seen)
	return t
}

// summaryMismatch compares a summary's interaction count with the
// distinct ids stored: over counts interactions counted twice, under
// stored records not counted; msg explains a difference ("" when equal).
func summaryMismatch(who string, counted, exported int) (over, under int, msg string) {
	switch d := counted - exported; {
	case d > 0:
		return d, 0, fmt.Sprintf("%s counts %d interactions but %d distinct ids are stored: %d counted twice", who, counted, exported, d)
	case d < 0:
		return 0, -d, fmt.Sprintf("%s counts %d interactions but %d distinct ids are stored: %d stored records not counted", who, counted, exported, -d)
	}
	return 0, 0, ""
}

// countInteractions asks base's summary how many interactions the
// touchpoint had over a window covering everything since began.
func countInteractions(ctx context.Context, c *http.Client, base, read string, began time.Time) (int, error) {
	end := time.Now().Add(2 * time.Minute).UTC().Truncate(time.Minute)
	window := end.Sub(began).Truncate(time.Minute) + 5*time.Minute
	q := url.Values{"touchpoint": {Touchpoint}, "window": {fmt.Sprintf("%dm", int(window.Minutes()))}, "end": {end.Format(time.RFC3339)}}
	var sum struct {
		Interactions *int `json:"interactions"`
	}
	if err := getJSON(ctx, c, base+"/v1/summary?"+q.Encode(), read, &sum); err != nil {
		return 0, fmt.Errorf("summary: %w", err)
	}
	if sum.Interactions == nil {
		return 0, errors.New("summary: no interactions field")
	}
	return *sum.Interactions, nil
}

// exportIDs reads base's GET /v1/export for the touchpoint and counts
// each id; lines is the number of records exported.
func exportIDs(ctx context.Context, base, read string) (seen map[string]int, lines int, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/v1/export?touchpoint="+Touchpoint, nil)
	if err != nil {
		return nil, 0, err
	}
	req.Header.Set("Authorization", "Bearer "+read)
	resp, err := (&http.Client{}).Do(req) // bounded by ctx, not by a client timeout
	if err != nil {
		return nil, 0, fmt.Errorf("export: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, 0, fmt.Errorf("export: %d", resp.StatusCode)
	}
	seen = map[string]int{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		if len(sc.Bytes()) == 0 {
			continue
		}
		var rec struct {
			ID         string `json:"id"`
			Touchpoint string `json:"touchpoint"`
		}
		if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
			return nil, lines, fmt.Errorf("export line %d %q: %w", lines+1, sc.Text(), err)
		}
		if rec.ID == "" || rec.Touchpoint != Touchpoint {
			return nil, lines, fmt.Errorf("export line %d has id %q, touchpoint %q", lines+1, rec.ID, rec.Touchpoint)
		}
		seen[rec.ID]++
		lines++
	}
	if err := sc.Err(); err != nil {
		return nil, lines, fmt.Errorf("export after %d lines: %w", lines, err)
	}
	return seen, lines, nil
}

// getJSON GETs url with a bearer token and decodes a 200 answer into v.
func getJSON(ctx context.Context, c *http.Client, url, token string, v any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return &ErrStatus{URL: url, Code: resp.StatusCode}
	}
	return json.NewDecoder(resp.Body).Decode(v)
}
