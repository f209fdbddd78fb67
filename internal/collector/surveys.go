package collector

import (
	"encoding/base64"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"os"
	"slices"
	"time"

	"github.com/prometheus/common/model"
	"sigs.k8s.io/yaml"

	"github.com/cxop-dev/cxop/internal/collectorapi"
	"github.com/cxop-dev/cxop/internal/pseudonym"
	"github.com/cxop-dev/cxop/internal/survey/engine"
	"github.com/cxop-dev/cxop/internal/survey/link"
	"github.com/cxop-dev/cxop/internal/webhook"
)

// secrets is a parsed collectorapi.Secrets file.
type secrets struct {
	linkKeys    link.Keys
	webhookKeys map[string][]byte
	customerKey *pseudonym.Key // nil without customerIDKey
	// customerKeyPrevious is the key customerKey replaced (nil without
	// customerIDKeyPrevious): only looked under, never used to store.
	customerKeyPrevious *pseudonym.Key
}

func parseSecrets(data []byte) (*secrets, error) {
	var f collectorapi.Secrets
	if err := yaml.UnmarshalStrict(data, &f); err != nil {
		// The parser's message may quote the file, which holds keys.
		return nil, errors.New("parse: not YAML with linkKeys.current, linkKeys.previous and webhookKeys (docs/collector.md)")
	}
	out := &secrets{webhookKeys: map[string][]byte{}}
	decode := func(field, v string) ([]byte, error) {
		b, err := base64.StdEncoding.DecodeString(v)
		if err != nil {
			return nil, fmt.Errorf("%s: not base64", field)
		}
		if len(b) < link.MinKeySize {
			return nil, fmt.Errorf("%s: %d bytes, need at least %d", field, len(b), link.MinKeySize)
		}
		return b, nil
	}
	var err error
	if out.linkKeys.Current, err = decode("linkKeys.current", f.LinkKeys.Current); err != nil {
		return nil, err
	}
	if f.LinkKeys.Previous != "" {
		if out.linkKeys.Previous, err = decode("linkKeys.previous", f.LinkKeys.Previous); err != nil {
			return nil, err
		}
	}
	for name, v := range f.WebhookKeys {
		raw, err := base64.StdEncoding.DecodeString(v)
		if err != nil {
			return nil, fmt.Errorf("webhookKeys.%s: not base64", name)
		}
		key, err := webhook.ParseKey(raw)
		if err != nil {
			return nil, fmt.Errorf("webhookKeys.%s: %w", name, err)
		}
		out.webhookKeys[name] = key
	}
	if out.customerKey, err = parseCustomerKey("customerIDKey", f.CustomerIDKey); err != nil {
		return nil, err
	}
	if out.customerKeyPrevious, err = parseCustomerKey("customerIDKeyPrevious", f.CustomerIDKeyPrevious); err != nil {
		return nil, err
	}
	return out, nil
}

func readSecretsFile(path string) (*secrets, []byte, error) {
	if path == "" {
		return nil, nil, nil
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, fmt.Errorf("read secrets: %w", err)
	}
	s, err := parseSecrets(data)
	if err != nil {
		return nil, data, fmt.Errorf("secrets %s: %w", path, err)
	}
	return s, data, nil
}

// parseInvite reads how a survey invites: trigger, throttle, link TTL,
// suspension and webhook.
func parseInvite(field string, sv *collectorapi.SurveyConfig, ss *surveySettings, touchpoints map[string]*touchpointSettings) error {
	inv := engine.Survey{Name: sv.Name, Kind: sv.Type, Question: sv.Question, FollowUpQuestion: sv.FollowUpQuestion, Suspended: sv.Suspend, SamplePercent: 100}
	duration := func(f, v string) (time.Duration, error) {
		if v == "" {
			return 0, nil
		}
		d, err := model.ParseDuration(v)
		if err != nil {
			return 0, fmt.Errorf("%s.%s: %q is not a duration such as 30d", field, f, v)
		}
		return time.Duration(d), nil
	}
	var err error
	if inv.Throttle, err = duration("throttle", sv.Throttle); err != nil {
		return err
	}
	if inv.LinkTTL, err = duration("linkTTL", sv.LinkTTL); err != nil {
		return err
	}
	if t := sv.Trigger; t != nil {
		if len(t.Touchpoints) == 0 {
			return fmt.Errorf("%s.trigger.touchpoints: at least one touchpoint is required", field)
		}
		for i, tp := range t.Touchpoints {
			if touchpoints[tp] == nil {
				return fmt.Errorf("%s.trigger.touchpoints[%d]: unknown touchpoint %q", field, i, tp)
			}
		}
		inv.Touchpoints = t.Touchpoints
		if inv.Delay, err = duration("trigger.delay", t.Delay); err != nil {
			return err
		}
		if t.SamplePercent != nil {
			if p := *t.SamplePercent; p < 0 || p > 100 {
				return fmt.Errorf("%s.trigger.samplePercent: %v is not between 0 and 100", field, p)
			}
			inv.SamplePercent = *t.SamplePercent
		}
	}
	if inv.Webhook, ss.webhookKey, err = parseWebhook(field+".webhook", sv.Webhook); err != nil {
		return err
	}
	if inv.DetractorWebhook, ss.detractorKey, err = parseWebhook(field+".detractorWebhook", sv.DetractorWebhook); err != nil {
		return err
	}
	ss.invite = inv
	return nil
}

// parseWebhook checks a webhook's URL and key name; the key itself comes
// from the secrets file.
func parseWebhook(field string, w *collectorapi.WebhookConfig) (*webhook.Endpoint, string, error) {
	if w == nil {
		return nil, "", nil
	}
	u, err := url.Parse(w.URL)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return nil, "", fmt.Errorf("%s.url: %q is not an http(s) URL", field, w.URL)
	}
	if w.Key == "" {
		return nil, "", fmt.Errorf("%s.key: names the signing key in the secrets file and is required", field)
	}
	return &webhook.Endpoint{URL: w.URL}, w.Key, nil
}

// engineConfig is the survey engine's view of the config and secrets. A
// webhook whose key is missing from the secrets file, or whose URL is plain
// http while allowHTTP is off, is left out (its invitations wait in the
// outbox) and reported.
func engineConfig(s *settings, sec *secrets, allowHTTP bool) (engine.Config, []string) {
	c := engine.Config{PageURL: s.pageURL, Revision: s.revision}
	var problems []string
	if sec != nil {
		c.LinkKeys = sec.linkKeys
	}
	schemes := &webhook.Guard{AllowHTTP: allowHTTP}
	withKey := func(survey, what string, ep *webhook.Endpoint, name string) *webhook.Endpoint {
		if ep == nil {
			return nil
		}
		// The config admits only http and https, so a refused scheme is
		// plain http while it is not allowed.
		var refused *webhook.SchemeError
		if errors.As(schemes.CheckURL(ep.URL), &refused) {
			problems = append(problems, fmt.Sprintf("survey %s: %s URL %s is plain http; webhooks are sent over https only (--allow-insecure-webhooks permits http); its messages wait", survey, what, refused.URL))
			return nil
		}
		var key []byte
		if sec != nil {
			key = sec.webhookKeys[name]
		}
		if key == nil {
			problems = append(problems, fmt.Sprintf("survey %s: %s key %q is not in the secrets file", survey, what, name))
			return nil
		}
		return &webhook.Endpoint{URL: ep.URL, Key: key}
	}
	for _, ss := range s.surveys {
		inv := ss.invite
		inv.Webhook = withKey(ss.name, "webhook", inv.Webhook, ss.webhookKey)
		inv.DetractorWebhook = withKey(ss.name, "detractorWebhook", inv.DetractorWebhook, ss.detractorKey)
		if len(inv.Touchpoints) > 0 && (sec == nil || s.pageURL == "") {
			problems = append(problems, fmt.Sprintf("survey %s: invitations need pageURL in the config and linkKeys in the secrets file", ss.name))
			inv.Touchpoints = nil
		}
		c.Surveys = append(c.Surveys, inv)
	}
	return c, problems
}

// followUp answers POST /v1/followups/{id}: the receiver of a detractor
// webhook marks the detractor followed up, with the survey's token.
func (s *Server) followUp(w http.ResponseWriter, r *http.Request) {
	const endpoint = "followups"
	e, allowed, ok := s.surveyCaller(w, r, endpoint)
	if !ok {
		return
	}
	id := r.PathValue("id")
	for _, survey := range slices.Sorted(maps.Keys(allowed)) {
		d, err := e.FollowUp(survey, id, s.now())
		if errors.Is(err, engine.ErrNoDetractor) {
			continue
		}
		if err != nil {
			s.log.Error("follow up", "err", err)
			s.reject(w, endpoint, "unavailable", 503, errorBody{Error: "not stored; retry"})
			return
		}
		writeJSON(w, 200, map[string]string{"detractor": d.ID, "survey": d.Survey, "followedUpAt": d.FollowedUpAt.UTC().Format(time.RFC3339Nano)})
		return
	}
	s.reject(w, endpoint, "not_found", 404, errorBody{Error: fmt.Sprintf("no detractor %q in the token's survey", id), Field: "id", Reason: "unknown detractor"})
}

// surveyCaller admits a request to an endpoint that takes a survey's token:
// it returns the survey engine and the surveys the token may act for, or
// answers 503 (no engine yet) or 401 and returns false.
func (s *Server) surveyCaller(w http.ResponseWriter, r *http.Request, endpoint string) (*engine.Engine, map[string]bool, bool) {
	e := s.surveys.Load()
	if e == nil {
		w.Header().Set("Retry-After", "5")
		s.reject(w, endpoint, "unavailable", 503, errorBody{Error: "the collector is not ready"})
		return nil, nil, false
	}
	allowed := map[string]bool{}
	if sum := bearer(r); sum != nil {
		for name, sv := range s.cfg.Load().surveys {
			if matches(sum, sv.tokens) {
				allowed[name] = true
			}
		}
	}
	if len(allowed) == 0 {
		w.Header().Set("WWW-Authenticate", `Bearer realm="cxop-collector"`)
		s.reject(w, endpoint, "unauthorized", 401, errorBody{Error: "missing or unknown bearer token: use the survey's token"})
		return nil, nil, false
	}
	return e, allowed, true
}
