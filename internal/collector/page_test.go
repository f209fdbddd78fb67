package collector

import (
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/cxop-dev/cxop/internal/survey/link"
)

type pageAnswer struct {
	status int
	body   string
	header http.Header
}

func getPage(t *testing.T, u string) pageAnswer {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return pageAnswer{resp.StatusCode, string(b), resp.Header}
}

func postPage(t *testing.T, u string, form url.Values, header map[string]string) pageAnswer {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, u, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return pageAnswer{resp.StatusCode, string(b), resp.Header}
}

var formTokenRE = regexp.MustCompile(`name="form" value="([0-9a-f]+)"`)

func TestSurveyPage(t *testing.T) { forEachEngine(t, testSurveyPage) }

func testSurveyPage(t *testing.T, e testEngine) {
	c := startSurveyCollector(t, e)
	c.interact(t, fmt.Sprintf(`{"id":"e1","touchpoint":"chat","customer":"c-7","time":%q}`, time.Now().UTC().Format(time.RFC3339)))
	waitFor(t, func() bool { return len(c.invitations()) == 1 })
	inv := c.invitations()[0]
	pageURL := inv["link"].(string)

	page := getPage(t, pageURL)
	if page.status != 200 {
		t.Fatalf("GET the link: %d\n%s", page.status, page.body)
	}
	for header, want := range map[string]string{
		"Referrer-Policy": "no-referrer", "Cache-Control": "no-store", "X-Content-Type-Options": "nosniff", "X-Frame-Options": "DENY",
	} {
		if got := page.header.Get(header); got != want {
			t.Errorf("%s = %q, want %q", header, got, want)
		}
	}
	if csp := page.header.Get("Content-Security-Policy"); !strings.HasPrefix(csp, "default-src 'none'; style-src 'nonce-") || !strings.Contains(csp, "form-action 'self'") {
		t.Errorf("Content-Security-Policy = %q", csp)
	}
	for _, want := range []string{
		`<html lang="en">`, `name="viewport"`, `<fieldset aria-describedby="ends">`, `<legend>How likely are you to recommend us?</legend>`,
		`<span class="vh">0, Not at all likely</span>`, `<span class="vh">10, Extremely likely</span>`,
		`<span>0 = Not at all likely</span><span>10 = Extremely likely</span>`,
		`<label for="comment">What is the main reason for your score?</label>`, `maxlength="1000"`,
	} {
		if !strings.Contains(page.body, want) {
			t.Errorf("the page lacks %s", want)
		}
	}
	if n := strings.Count(page.body, `type="radio" name="score"`); n != 11 {
		t.Errorf("%d radio buttons, want 11 (0–10)", n)
	}
	if strings.Contains(page.body, "<script") || strings.Contains(page.body, "c-7") {
		t.Error("the page has a script or shows the customer id")
	}
	form := formTokenRE.FindStringSubmatch(page.body)
	if form == nil {
		t.Fatal("no form token")
	}

	answer := url.Values{"form": {form[1]}, "score": {"3"}, "comment": {"The wait was long."}}
	if got := postPage(t, pageURL, url.Values{"score": {"3"}}, nil); got.status != 403 {
		t.Errorf("POST without the form token: %d", got.status)
	}
	if got := postPage(t, pageURL, answer, map[string]string{"Sec-Fetch-Site": "cross-site"}); got.status != 403 {
		t.Errorf("cross-site POST: %d", got.status)
	}
	if got := postPage(t, pageURL, url.Values{"form": {form[1]}, "score": {"11"}}, nil); got.status != 400 || !strings.Contains(got.body, "Please choose a score from 0 to 10.") || !strings.Contains(got.body, `role="alert"`) {
		t.Errorf("POST score 11: %d\n%s", got.status, got.body)
	}
	long := url.Values{"form": {form[1]}, "score": {"3"}, "comment": {strings.Repeat("é", 1001)}}
	if got := postPage(t, pageURL, long, nil); got.status != 400 || !strings.Contains(got.body, "shorten your comment to 1000") || !strings.Contains(got.body, `value="3" required checked`) {
		t.Errorf("POST a 1,001-character comment: %d", got.status)
	}

	if got := postPage(t, pageURL, answer, nil); got.status != 200 || !strings.Contains(got.body, "Thank you for your answer.") {
		t.Fatalf("POST the answer: %d\n%s", got.status, got.body)
	}
	if got := postPage(t, pageURL, answer, nil); got.status != 200 || !strings.Contains(got.body, "You have already answered") {
		t.Errorf("second POST: %d\n%s", got.status, got.body)
	}
	changed := url.Values{"form": {form[1]}, "score": {"10"}, "comment": {"Changed my mind."}}
	if got := postPage(t, pageURL, changed, nil); got.status != 200 || !strings.Contains(got.body, "You have already answered") {
		t.Errorf("POST another answer: %d\n%s", got.status, got.body)
	}
	if got := getPage(t, pageURL); !strings.Contains(got.body, "You have already answered") || strings.Contains(got.body, "<form") {
		t.Errorf("GET after answering: %d", got.status)
	}
	sum := c.summary(t, "nps")
	if sum.Responses != 1 || sum.Detractors == nil || *sum.Detractors != 1 || sum.Invitations.ResponseRate == nil || *sum.Invitations.ResponseRate != 100 {
		t.Errorf("summary after one answer of 3 = responses %d, detractors %v, invitations %+v", sum.Responses, sum.Detractors, sum.Invitations)
	}

	// The detractor reaches the closed loop, which marks it followed up.
	waitFor(t, func() bool { return len(c.detractors()) == 1 })
	det := c.detractors()[0]
	if det["score"] != 3.0 || det["comment"] != "The wait was long." || det["customer"] != "c-7" || det["survey"] != "nps" {
		t.Errorf("detractor webhook body = %v", det)
	}
	if s := c.summary(t, "nps").Invitations; s.Detractors != 1 || s.OpenDetractors != 1 || s.FollowUpP50Seconds != nil {
		t.Errorf("before the follow-up: %+v", s)
	}
	followUp := func(token, id string) int {
		req, _ := http.NewRequest(http.MethodPost, c.base+"/v1/followups/"+id, nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	detID := det["detractor"].(string)
	if det["followUp"] != "/v1/followups/"+detID {
		t.Errorf("followUp path = %v", det["followUp"])
	}
	for name, tc := range map[string]struct {
		token, id string
		want      int
	}{
		"no token":           {"", detID, 401},
		"another survey's":   {csatToken, detID, 404},
		"unknown detractor":  {npsToken, "0123", 404},
		"the survey's token": {npsToken, detID, 200},
		"again":              {npsToken, detID, 200},
	} {
		if got := followUp(tc.token, tc.id); got != tc.want {
			t.Errorf("follow-up with %s: %d, want %d", name, got, tc.want)
		}
	}
	if s := c.summary(t, "nps").Invitations; s.OpenDetractors != 0 || s.FollowUpP50Seconds == nil || *s.FollowUpP50Seconds < 0 || *s.FollowUpP50Seconds > 60 {
		t.Errorf("after the follow-up: %+v", s)
	}

	// Refused links: the same pages whatever is wrong, naming nothing.
	token := strings.TrimPrefix(pageURL, c.base+"/s/")
	id, expires, err := link.Parse(token)
	if err != nil {
		t.Fatal(err)
	}
	keys := link.Keys{Current: c.linkKey}
	crossSurvey, _ := link.Sign(keys, link.Claims{Invitation: id, Survey: "csat", Customer: "c-7", Expires: expires})
	expired, _ := link.Sign(keys, link.Claims{Invitation: id, Survey: "nps", Customer: "c-7", Expires: time.Now().Add(-time.Minute)})
	forged, _ := link.Sign(link.Keys{Current: []byte(strings.Repeat("F", 32))}, link.Claims{Invitation: id, Survey: "nps", Customer: "c-7", Expires: expires})
	for name, tc := range map[string]struct {
		token  string
		status int
		text   string
	}{
		"forged":       {forged, 404, "This link does not work"},
		"cross-survey": {crossSurvey, 404, "This link does not work"},
		"malformed":    {"not-a-token", 404, "This link does not work"},
		"expired":      {expired, 410, "This survey has closed"},
	} {
		got := getPage(t, c.base+"/s/"+tc.token)
		if got.status != tc.status || !strings.Contains(got.body, tc.text) || strings.Contains(got.body, "c-7") || strings.Contains(got.body, "nps") {
			t.Errorf("%s link: %d\n%s", name, got.status, got.body)
		}
	}
}
