// Package browser drives the hosted survey page in a real headless
// Chromium (Debian package chromium; CHROMIUM names it, as make test does):
// a customer opens the link of a signed invitation on a phone-sized
// screen, answers with the keyboard alone, and the answer is counted.
package browser

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"

	"github.com/cxop-dev/cxop/internal/collector"
	"github.com/cxop-dev/cxop/internal/collectorapi"
)

const (
	chatToken = "chat-token-0123456789"
	readToken = "read-token-0123456789"
	question  = "How likely are you to recommend our support to a friend?"
)

// startCollector runs a collector with one NPS survey triggered by chat
// and returns its URL and the invitation links its webhook receives.
func startCollector(t *testing.T) (string, func() []string) {
	t.Helper()
	var mu sync.Mutex
	var links []string
	rcv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var b struct {
			Type string `json:"type"`
			Link string `json:"link"`
		}
		data, _ := io.ReadAll(r.Body)
		_ = json.Unmarshal(data, &b)
		if b.Type == "survey.invitation" {
			mu.Lock()
			links = append(links, b.Link)
			mu.Unlock()
		}
	}))
	t.Cleanup(rcv.Close)

	dir := t.TempDir()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	_ = l.Close()
	cfg := fmt.Sprintf(`pageURL: http://%s
readTokenSHA256: [%s]
touchpoints: [{name: chat, tokenSHA256: [%s]}]
surveys:
  - name: nps
    type: NPS
    question: %q
    followUpQuestion: What is the main reason for your score?
    trigger: {touchpoints: [chat]}
    webhook: {url: %q, key: hook}
`, addr, collectorapi.HashToken(readToken), collectorapi.HashToken(chatToken), question, rcv.URL)
	secrets := fmt.Sprintf("linkKeys: {current: %s}\nwebhookKeys: {hook: %s}\n",
		base64.StdEncoding.EncodeToString([]byte(strings.Repeat("k", 32))), base64.StdEncoding.EncodeToString([]byte(strings.Repeat("h", 32))))
	for name, data := range map[string]string{"config.yaml": cfg, "secrets.yaml": secrets} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- collector.Run(ctx, collector.Options{Listen: addr, DataDir: filepath.Join(dir, "data"),
			ConfigPath: filepath.Join(dir, "config.yaml"), SecretsPath: filepath.Join(dir, "secrets.yaml"),
			WebhookAllowLoopback: true, AllowInsecureWebhooks: true, LogLevel: "error"})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("collector: %v", err)
		}
	})
	base := "http://" + addr
	eventually(t, func() bool {
		resp, err := http.Get(base + "/readyz")
		return err == nil && resp.Body.Close() == nil && resp.StatusCode == 200
	})
	return base, func() []string { mu.Lock(); defer mu.Unlock(); return append([]string(nil), links...) }
}

func eventually(t *testing.T, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatal("timed out")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// pageFacts is what the page offers to assistive technology, read from the
// DOM the browser built.
type pageFacts struct {
	Legend        string   `json:"legend"`
	RadioLabels   []string `json:"radioLabels"`
	CommentLabel  string   `json:"commentLabel"`
	Scripts       int      `json:"scripts"`
	ScrollWidth   int      `json:"scrollWidth"`
	ViewportWidth int      `json:"viewportWidth"`
	Lang          string   `json:"lang"`
}

func TestAnswerOnAPhoneWithTheKeyboard(t *testing.T) {
	chromium := os.Getenv("CHROMIUM")
	if chromium == "" {
		t.Fatal(`CHROMIUM must name a Chromium binary: run "make test" (hack/setup-chromium.sh installs it)`)
	}
	base, links := startCollector(t)
	req, _ := http.NewRequest(http.MethodPost, base+"/v1/events",
		strings.NewReader(fmt.Sprintf(`{"id":"e1","touchpoint":"chat","customer":"c-1","time":%q}`, time.Now().UTC().Format(time.RFC3339))))
	req.Header.Set("Authorization", "Bearer "+chatToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("post event: %v %v", resp, err)
	}
	resp.Body.Close()
	eventually(t, func() bool { return len(links()) == 1 })
	link := links()[0]

	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium),
		// CI runs as root, where Chromium's sandbox cannot start.
		chromedp.NoSandbox,
		chromedp.Flag("disable-dev-shm-usage", true),
	)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancelAlloc()
	ctx, cancel := chromedp.NewContext(allocCtx)
	defer cancel()
	ctx, cancelTimeout := context.WithTimeout(ctx, 60*time.Second)
	defer cancelTimeout()

	// What the page offers to assistive technology, read from the DOM the
	// browser built: the question as the fieldset's legend, one label per
	// radio button naming its score (the ends with their meaning), a
	// labelled text area, no script, and nothing wider than the phone.
	var page pageFacts
	err = chromedp.Do(ctx,
		chromedp.EmulateViewport(375, 740, chromedp.EmulateMobile, chromedp.EmulateScale(2)),
		chromedp.Navigate(link),
		chromedp.WaitVisible(chromedp.CSS(`fieldset`)),
	)
	if err == nil {
		page, err = chromedp.Run(ctx, chromedp.Evaluate[pageFacts](`({
			legend: document.querySelector('fieldset > legend').textContent.trim(),
			radioLabels: [...document.querySelectorAll('input[type=radio][name=score]')].map(r => r.labels.length === 1 ? r.labels[0].querySelector('.vh').textContent : ''),
			commentLabel: (document.querySelector('textarea').labels[0] || {}).textContent || '',
			scripts: document.scripts.length,
			scrollWidth: document.documentElement.scrollWidth,
			viewportWidth: window.innerWidth,
			lang: document.documentElement.lang,
		})`))
	}
	if err != nil {
		t.Fatalf("open the link: %v", err)
	}
	t.Logf("accessibility facts: legend %q; radio labels %q; comment label %q; %d scripts; %d px wide in a %d px viewport; lang %q",
		page.Legend, page.RadioLabels, page.CommentLabel, page.Scripts, page.ScrollWidth, page.ViewportWidth, page.Lang)
	if page.Legend != question {
		t.Errorf("legend = %q", page.Legend)
	}
	if len(page.RadioLabels) != 11 || page.RadioLabels[0] != "0, Not at all likely" || page.RadioLabels[3] != "3" || page.RadioLabels[10] != "10, Extremely likely" {
		t.Errorf("radio labels = %q", page.RadioLabels)
	}
	if page.CommentLabel != "What is the main reason for your score?" || page.Scripts != 0 || page.Lang != "en" {
		t.Errorf("comment label %q, %d scripts, lang %q", page.CommentLabel, page.Scripts, page.Lang)
	}
	if page.ScrollWidth > page.ViewportWidth {
		t.Errorf("the page scrolls sideways on a phone: %d px wide in a %d px viewport", page.ScrollWidth, page.ViewportWidth)
	}

	// Keyboard only: Tab into the scale (focus lands on 0), arrow right
	// three times to choose 3, Tab to the comment, type, Tab to the button,
	// Enter.
	err = chromedp.Do(ctx,
		chromedp.KeyEvent(kb.Tab),
		chromedp.KeyEvent(kb.ArrowRight), chromedp.KeyEvent(kb.ArrowRight), chromedp.KeyEvent(kb.ArrowRight),
	)
	var focused, thanks string
	if err == nil {
		focused, err = chromedp.Run(ctx, chromedp.Evaluate[string](`document.activeElement.value`))
	}
	if err == nil {
		err = chromedp.Do(ctx,
			chromedp.KeyEvent(kb.Tab),
			chromedp.KeyEvent("The wait was long."),
			chromedp.KeyEvent(kb.Tab),
			chromedp.KeyEvent(kb.Enter),
			chromedp.WaitVisible(chromedp.CSS(`main > h1`)),
		)
	}
	if err == nil {
		thanks, err = chromedp.Run(ctx, chromedp.Text(chromedp.CSS(`main`)))
	}
	if err != nil {
		t.Fatalf("answer with the keyboard: %v", err)
	}
	if focused != "3" {
		t.Errorf("after Tab and three arrows the focused score is %q, want 3", focused)
	}
	if !strings.Contains(thanks, "Thank you for your answer.") {
		t.Errorf("after sending: %q", thanks)
	}

	// The collector counted exactly that answer.
	sreq, _ := http.NewRequest(http.MethodGet, base+"/v1/summary?survey=nps&window=1d", nil)
	sreq.Header.Set("Authorization", "Bearer "+readToken)
	sresp, err := http.DefaultClient.Do(sreq)
	if err != nil {
		t.Fatal(err)
	}
	defer sresp.Body.Close()
	var sum collectorapi.SurveySummary
	if err := json.NewDecoder(sresp.Body).Decode(&sum); err != nil {
		t.Fatal(err)
	}
	if sum.Responses != 1 || sum.Detractors == nil || *sum.Detractors != 1 || sum.Distribution[3] != 1 {
		t.Errorf("summary = %d responses, distribution %v", sum.Responses, sum.Distribution)
	}
}
