package collectorapi

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

// Member is one customer of a wave's audience.
type Member struct {
	Customer string   `json:"customer"`
	Contact  *Contact `json:"contact,omitempty"`
}

// Contact is how a customer is reached: what the survey's webhook receives
// with an invitation.
type Contact struct {
	Email string `json:"email,omitempty"`
	Phone string `json:"phone,omitempty"`
}

// WaveRequest is the body of POST /v1/waves.
type WaveRequest struct {
	Survey   string   `json:"survey"`
	Wave     string   `json:"wave"`
	Audience []Member `json:"audience"`
}

// ParseAudience reads a wave's audience: a JSON array of
// {"customer","contact"} objects, or one customer per line as
// "id[,email[,phone]]" (blank lines and lines starting with # skipped).
func ParseAudience(data []byte) ([]Member, error) {
	trimmed := bytes.TrimSpace(data)
	if len(trimmed) > 0 && trimmed[0] == '[' {
		var out []Member
		dec := json.NewDecoder(bytes.NewReader(trimmed))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&out); err != nil {
			return nil, fmt.Errorf("audience JSON: %s", strings.TrimPrefix(err.Error(), "json: "))
		}
		for i, m := range out {
			if m.Customer == "" {
				return nil, fmt.Errorf("audience[%d].customer: is required", i)
			}
		}
		return out, nil
	}
	var out []Member
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		fields := strings.Split(line, ",")
		if len(fields) > 3 || strings.TrimSpace(fields[0]) == "" {
			return nil, fmt.Errorf("audience line %d: want customer-id[,email[,phone]]", n)
		}
		m := Member{Customer: strings.TrimSpace(fields[0])}
		if len(fields) > 1 {
			m.Contact = &Contact{Email: strings.TrimSpace(fields[1])}
			if len(fields) > 2 {
				m.Contact.Phone = strings.TrimSpace(fields[2])
			}
		}
		out = append(out, m)
	}
	return out, sc.Err()
}

// waveChunk is how many customers one request carries.
const waveChunk = 5_000

// SendWave posts an audience to a collector in parts, each with its own
// wave id (wave, wave/2, …), so that a retried run re-sends parts the
// collector then reports as duplicates.
func SendWave(ctx context.Context, client *http.Client, baseURL, token, survey, wave string, audience []Member) (sent, duplicates int, err error) {
	for part := 1; ; part++ {
		start := (part - 1) * waveChunk
		end := min(start+waveChunk, len(audience))
		id := wave
		if part > 1 {
			id = fmt.Sprintf("%s/%d", wave, part)
		}
		body, _ := json.Marshal(WaveRequest{Survey: survey, Wave: id, Audience: audience[start:end]})
		var dup bool
		for attempt := 1; ; attempt++ {
			dup, err = postWave(ctx, client, baseURL, token, body)
			if err == nil || attempt == 5 || ctx.Err() != nil {
				break
			}
			time.Sleep(time.Duration(attempt) * time.Second)
		}
		if err != nil {
			return sent, duplicates, fmt.Errorf("wave part %d: %w", part, err)
		}
		if dup {
			duplicates += end - start
		} else {
			sent += end - start
		}
		if end >= len(audience) {
			return sent, duplicates, nil
		}
	}
}

func postWave(ctx context.Context, client *http.Client, baseURL, token string, body []byte) (bool, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimSuffix(baseURL, "/")+"/v1/waves", bytes.NewReader(body))
	if err != nil {
		return false, err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return false, err
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode != 200 {
		return false, fmt.Errorf("collector answered %d: %s", resp.StatusCode, strings.TrimSpace(string(data)))
	}
	var res struct {
		Duplicate bool `json:"duplicate"`
	}
	if err := json.Unmarshal(data, &res); err != nil {
		return false, fmt.Errorf("collector answer: %w", err)
	}
	return res.Duplicate, nil
}
