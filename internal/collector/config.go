package collector

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"fmt"
	"net/url"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/common/model"
	"sigs.k8s.io/yaml"

	"github.com/cxop-dev/cxop/internal/collectorapi"
	"github.com/cxop-dev/cxop/internal/pseudonym"
	"github.com/cxop-dev/cxop/internal/score"
	"github.com/cxop-dev/cxop/internal/survey/engine"
)

// DefaultRetention is how long records are kept when the config is silent.
const DefaultRetention = 400 * 24 * time.Hour

// settings is a parsed, validated collectorapi.Config, ready for lookups.
type settings struct {
	touchpoints map[string]*touchpointSettings
	surveys     map[string]*surveySettings
	readTokens  [][]byte
	retention   time.Duration
	pageURL     string
	// contactRetention: contact fields are dropped this long after
	// delivery succeeded or was given up.
	contactRetention time.Duration
	// pseudonymizeCustomers is the config's; customerKey is
	// the secrets file's customerIDKey, set by withCustomerKey when it is
	// on (nil otherwise).
	pseudonymizeCustomers bool
	customerKey           *pseudonym.Key

	// customerDataTokens may list and erase customers (customers.go).
	customerDataTokens [][]byte
	// revision is the config's (collectorapi.Config.Revision): on
	// PostgreSQL it is recorded before records are accepted under the
	// config, and the survey engine defers to a replica with a newer one.
	revision int64
}

type touchpointSettings struct {
	name      string
	threshold time.Duration // 0: no threshold, waits are not assessed
	calendar  *calendar     // nil: always open
	tokens    [][]byte
	// triggers: a survey's trigger names the touchpoint, so the survey
	// engine reads its interactions (store.Record.SkipFeed).
	triggers bool
}

type surveySettings struct {
	name   string
	kind   score.Kind
	tokens [][]byte
	// invite is how the survey engine invites to this survey; its webhook
	// key is filled in from the secrets file.
	invite       engine.Survey
	webhookKey   string
	detractorKey string
}

var nameRE = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)

// parseConfig reads and validates a config file; errors name the field.
func parseConfig(data []byte) (*settings, error) {
	var c collectorapi.Config
	if err := yaml.UnmarshalStrict(data, &c); err != nil {
		return nil, fmt.Errorf("parse: %w", err)
	}
	s := &settings{touchpoints: map[string]*touchpointSettings{}, surveys: map[string]*surveySettings{}, retention: DefaultRetention,
		pseudonymizeCustomers: c.PseudonymizeCustomers, revision: c.Revision}
	if c.Revision < 0 {
		return nil, fmt.Errorf("revision: %d is negative", c.Revision)
	}
	if c.Retention != "" {
		d, err := model.ParseDuration(c.Retention)
		if err != nil || d <= 0 {
			return nil, fmt.Errorf("retention: %q is not a positive duration such as 400d", c.Retention)
		}
		s.retention = time.Duration(d)
	}
	if err := parseContactRetention(s, c.ContactRetention); err != nil {
		return nil, err
	}
	var err error
	if s.readTokens, err = parseHashes("readTokenSHA256", c.ReadTokenSHA256); err != nil {
		return nil, err
	}
	if s.customerDataTokens, err = parseHashes("customerDataTokenSHA256", c.CustomerDataTokenSHA256); err != nil {
		return nil, err
	}
	for i, tp := range c.Touchpoints {
		field := fmt.Sprintf("touchpoints[%d]", i)
		if !nameRE.MatchString(tp.Name) || len(tp.Name) > 63 {
			return nil, fmt.Errorf("%s.name: %q is not a DNS-1123 label", field, tp.Name)
		}
		if _, dup := s.touchpoints[tp.Name]; dup {
			return nil, fmt.Errorf("%s.name: %q appears twice", field, tp.Name)
		}
		ts := &touchpointSettings{name: tp.Name}
		if tp.WaitThreshold != "" {
			d, err := model.ParseDuration(tp.WaitThreshold)
			if err != nil || d <= 0 {
				return nil, fmt.Errorf("%s.waitThreshold: %q is not a positive duration such as 2m", field, tp.WaitThreshold)
			}
			ts.threshold = time.Duration(d)
		}
		if tp.BusinessHours != nil {
			if ts.calendar, err = parseCalendar(field+".businessHours", tp.BusinessHours); err != nil {
				return nil, err
			}
		}
		if ts.tokens, err = parseHashes(field+".tokenSHA256", tp.TokenSHA256); err != nil {
			return nil, err
		}
		s.touchpoints[tp.Name] = ts
	}
	if c.PageURL != "" {
		u, err := url.Parse(c.PageURL)
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
			return nil, fmt.Errorf("pageURL: %q is not an http(s) URL without query such as https://cx.example.com", c.PageURL)
		}
		s.pageURL = strings.TrimSuffix(c.PageURL, "/")
	}
	for i, sv := range c.Surveys {
		field := fmt.Sprintf("surveys[%d]", i)
		if !nameRE.MatchString(sv.Name) || len(sv.Name) > 63 {
			return nil, fmt.Errorf("%s.name: %q is not a DNS-1123 label", field, sv.Name)
		}
		if _, dup := s.surveys[sv.Name]; dup {
			return nil, fmt.Errorf("%s.name: %q appears twice", field, sv.Name)
		}
		if !sv.Type.Valid() {
			return nil, fmt.Errorf("%s.type: %q is not one of NPS, CSAT, CES", field, sv.Type)
		}
		ss := &surveySettings{name: sv.Name, kind: sv.Type}
		if ss.tokens, err = parseHashes(field+".tokenSHA256", sv.TokenSHA256); err != nil {
			return nil, err
		}
		if err := parseInvite(field, &sv, ss, s.touchpoints); err != nil {
			return nil, err
		}
		if err := checkRetention(field, &ss.invite, s.retention); err != nil {
			return nil, err
		}
		s.surveys[sv.Name] = ss
		for _, tp := range ss.invite.Touchpoints {
			s.touchpoints[tp].triggers = true
		}
	}
	return s, nil
}

func parseHashes(field string, hexes []string) ([][]byte, error) {
	out := make([][]byte, 0, len(hexes))
	for i, h := range hexes {
		b, err := hex.DecodeString(h)
		if err != nil || len(b) != sha256.Size {
			return nil, fmt.Errorf("%s[%d]: not a hex SHA-256 (64 hex digits)", field, i)
		}
		out = append(out, b)
	}
	return out, nil
}

// matches reports whether sum is one of hashes, comparing every hash in
// constant time so the answer's timing says nothing about near misses.
func matches(sum []byte, hashes [][]byte) bool {
	ok := 0
	for _, h := range hashes {
		ok |= subtle.ConstantTimeCompare(sum, h)
	}
	return ok == 1
}

func readConfigFile(path string) (*settings, []byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, fmt.Errorf("read config: %w", err)
	}
	s, err := parseConfig(data)
	if err != nil {
		return nil, data, fmt.Errorf("config %s: %w", path, err)
	}
	return s, data, nil
}

// calendar answers "is this moment within business hours?".
type calendar struct {
	loc     *time.Location
	periods [7][][2]int // per weekday, [start, end) in minutes since midnight
}

var weekdays = map[string]time.Weekday{"Sunday": time.Sunday, "Monday": time.Monday, "Tuesday": time.Tuesday,
	"Wednesday": time.Wednesday, "Thursday": time.Thursday, "Friday": time.Friday, "Saturday": time.Saturday}

func parseCalendar(field string, bh *collectorapi.BusinessHours) (*calendar, error) {
	c := &calendar{loc: time.UTC}
	if bh.TimeZone != "" {
		loc, err := time.LoadLocation(bh.TimeZone)
		if err != nil {
			return nil, fmt.Errorf("%s.timeZone: %q is not an IANA time zone", field, bh.TimeZone)
		}
		c.loc = loc
	}
	if len(bh.Hours) == 0 {
		return nil, fmt.Errorf("%s.hours: at least one interval is required", field)
	}
	for i, p := range bh.Hours {
		pf := fmt.Sprintf("%s.hours[%d]", field, i)
		start, err := clockMinutes(p.Start, false)
		if err != nil {
			return nil, fmt.Errorf("%s.start: %w", pf, err)
		}
		end, err := clockMinutes(p.End, true)
		if err != nil {
			return nil, fmt.Errorf("%s.end: %w", pf, err)
		}
		if start >= end {
			return nil, fmt.Errorf("%s: start %s must be before end %s", pf, p.Start, p.End)
		}
		if len(p.Days) == 0 {
			return nil, fmt.Errorf("%s.days: at least one weekday is required", pf)
		}
		for j, d := range p.Days {
			wd, ok := weekdays[d]
			if !ok {
				return nil, fmt.Errorf("%s.days[%d]: %q is not a weekday such as Monday", pf, j, d)
			}
			c.periods[wd] = append(c.periods[wd], [2]int{start, end})
		}
	}
	return c, nil
}

func clockMinutes(s string, allow24 bool) (int, error) {
	h, m, ok := strings.Cut(s, ":")
	hh, err1 := strconv.Atoi(h)
	mm, err2 := strconv.Atoi(m)
	if !ok || len(h) != 2 || len(m) != 2 || err1 != nil || err2 != nil || mm < 0 || mm > 59 || hh < 0 || hh > 24 ||
		(hh == 24 && (mm != 0 || !allow24)) {
		return 0, fmt.Errorf("%q is not a time of day as HH:MM", s)
	}
	return hh*60 + mm, nil
}

// open reports whether t falls within business hours.
func (c *calendar) open(t time.Time) bool {
	if c == nil {
		return true
	}
	lt := t.In(c.loc)
	m := lt.Hour()*60 + lt.Minute()
	for _, p := range c.periods[lt.Weekday()] {
		if m >= p[0] && m < p[1] {
			return true
		}
	}
	return false
}
