package collector

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"html/template"
	"net/http"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/cxop-dev/cxop/internal/rollup"
	"github.com/cxop-dev/cxop/internal/score"
	"github.com/cxop-dev/cxop/internal/store"
	"github.com/cxop-dev/cxop/internal/survey/engine"
	"github.com/cxop-dev/cxop/internal/survey/link"
)

// The hosted survey page, GET and POST /s/{token}: one question on the
// survey's scale, an optional follow-up, and plain pages for a thank-you,
// an expired link, an answered one and an invalid one. It works without
// JavaScript (there is none: the CSP forbids scripts), with a keyboard and
// a screen reader (a fieldset whose legend is the question, one labelled
// radio button per score, the scale's ends named), and on a phone.

// maxPageComment caps the follow-up answer, in characters; the form says
// so and the server enforces it.
const maxPageComment = 1000

// maxPageBody caps a POSTed form.
const maxPageBody = 16 << 10

// errStoreReopening is why an answer is not saved while the store is
// being reopened.
var errStoreReopening = errors.New("the store is being reopened")

// scaleEnds names the two ends of each survey type's scale.
var scaleEnds = map[score.Kind][2]string{
	score.NPS:  {"Not at all likely", "Extremely likely"},
	score.CSAT: {"Very dissatisfied", "Very satisfied"},
	score.CES:  {"Very difficult", "Very easy"},
}

type pageData struct {
	Nonce     string
	Title     string
	Message   string
	Question  string
	FollowUp  string
	Scores    []scoreOption
	Low, High string
	FormToken string
	Error     string
	Comment   string
	MaxLen    int
}

type scoreOption struct {
	Value    int
	Label    string // what a screen reader reads: "0, Not at all likely"
	Checked  bool
	Extremes bool
}

var pageTemplate = template.Must(template.New("page").Parse(`<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>{{.Title}}</title>
<style nonce="{{.Nonce}}">
body{font-family:system-ui,sans-serif;max-width:40rem;margin:0 auto;padding:1rem;line-height:1.5;color:#1a1a1a;background:#fff}
fieldset{border:0;padding:0;margin:0 0 1.5rem}
legend{font-size:1.25rem;font-weight:600;margin-bottom:.75rem}
.scale{display:flex;flex-wrap:wrap;gap:.375rem}
.scale label{display:flex;flex-direction:column;align-items:center;min-width:2.75rem;min-height:2.75rem;justify-content:center;border:1px solid #666;border-radius:.375rem;cursor:pointer}
.scale input{margin:.25rem}
.scale input:focus-visible{outline:3px solid #0b57d0;outline-offset:2px}
.ends{display:flex;justify-content:space-between;font-size:.9rem;color:#444;margin:.5rem 0 0}
.vh{position:absolute;width:1px;height:1px;overflow:hidden;clip:rect(0 0 0 0);white-space:nowrap}
textarea{width:100%;box-sizing:border-box;font:inherit;padding:.5rem}
button{font:inherit;font-weight:600;padding:.75rem 1.5rem;min-height:2.75rem;margin-top:1rem;border:0;border-radius:.375rem;background:#0b57d0;color:#fff;cursor:pointer}
button:focus-visible{outline:3px solid #1a1a1a;outline-offset:2px}
.error{color:#a50e0e;font-weight:600}
</style>
</head>
<body>
<main>
{{- if .Question}}
<form method="post" novalidate>
<fieldset aria-describedby="ends">
<legend>{{.Question}}</legend>
{{- if .Error}}<p class="error" role="alert" id="error">{{.Error}}</p>{{end}}
<div class="scale">
{{- range .Scores}}
<label><input type="radio" name="score" value="{{.Value}}" required{{if .Checked}} checked{{end}}><span aria-hidden="true">{{.Value}}</span><span class="vh">{{.Label}}</span></label>
{{- end}}
</div>
<p class="ends" id="ends"><span>{{.Low}}</span><span>{{.High}}</span></p>
</fieldset>
{{- if .FollowUp}}
<p><label for="comment">{{.FollowUp}}</label> <span id="comment-hint">(optional, up to {{.MaxLen}} characters)</span></p>
<textarea id="comment" name="comment" rows="4" maxlength="{{.MaxLen}}" aria-describedby="comment-hint">{{.Comment}}</textarea>
{{- end}}
<input type="hidden" name="form" value="{{.FormToken}}">
<button type="submit">Send my answer</button>
</form>
{{- else}}
<h1>{{.Title}}</h1>
<p>{{.Message}}</p>
{{- end}}
</main>
</body>
</html>
`))

// pageHandler serves GET and POST /s/{token}; cross-origin POSTs are
// refused by the standard library's CSRF protection (Sec-Fetch-Site and
// Origin), and every form also carries a token bound to the link.
func (s *Server) pageHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /s/{token}", s.surveyPage)
	mux.HandleFunc("POST /s/{token}", s.surveyAnswer)
	return http.NewCrossOriginProtection().Handler(mux)
}

// pageInvitation resolves a link token to its invitation and survey, or
// answers with the page that says why it cannot.
func (s *Server) pageInvitation(w http.ResponseWriter, r *http.Request, nonce string) (*engine.Invitation, *surveySettings, link.Keys, bool) {
	token := r.PathValue("token")
	e, st := s.surveys.Load(), s.storage()
	keys := s.linkKeys.Load()
	if e == nil || st == nil || keys == nil {
		s.renderPage(w, http.StatusServiceUnavailable, pageData{Nonce: nonce, Title: "Please try again shortly", Message: "The survey is not available right now. Please open the link again in a few minutes."})
		return nil, nil, link.Keys{}, false
	}
	invalid := pageData{Nonce: nonce, Title: "This link does not work", Message: "Please check that you opened the whole link from your message."}
	id, _, err := link.Parse(token)
	if err != nil {
		s.renderPage(w, http.StatusNotFound, invalid)
		return nil, nil, link.Keys{}, false
	}
	inv, ok, err := e.Invitation(id.String())
	if err != nil {
		s.log.Error("survey page: read invitation", "err", err)
		s.renderPage(w, http.StatusInternalServerError, pageData{Nonce: nonce, Title: "Something went wrong", Message: "Please try again later."})
		return nil, nil, link.Keys{}, false
	}
	sv := s.cfg.Load().surveys[inv.Survey]
	if !ok || sv == nil {
		s.renderPage(w, http.StatusNotFound, invalid)
		return nil, nil, link.Keys{}, false
	}
	switch err := link.Verify(*keys, token, link.Claims{Invitation: id, Survey: inv.Survey, Customer: inv.Customer}, s.now()); {
	case errors.Is(err, link.ErrExpired):
		s.renderPage(w, http.StatusGone, pageData{Nonce: nonce, Title: "This survey has closed", Message: "Thank you for your interest. The time to answer this survey has passed."})
		return nil, nil, link.Keys{}, false
	case err != nil:
		s.renderPage(w, http.StatusNotFound, invalid)
		return nil, nil, link.Keys{}, false
	}
	answered, err := st.Has(r.Context(), rollup.KindSurvey, inv.Survey, answerID(inv.ID))
	if err != nil {
		s.log.Error("survey page: look up answer", "err", err)
		s.renderPage(w, http.StatusInternalServerError, pageData{Nonce: nonce, Title: "Something went wrong", Message: "Please try again later."})
		return nil, nil, link.Keys{}, false
	}
	if answered {
		s.renderPage(w, http.StatusOK, alreadyAnswered(nonce))
		return nil, nil, link.Keys{}, false
	}
	return &inv, sv, *keys, true
}

func alreadyAnswered(nonce string) pageData {
	return pageData{Nonce: nonce, Title: "You have already answered", Message: "Thank you, we have your answer."}
}

// answerID is the idempotency key of the answer to an invitation: a
// second submit of the form is a duplicate, stored once.
func answerID(invitation string) string { return "inv-" + invitation }

func (s *Server) surveyPage(w http.ResponseWriter, r *http.Request) {
	nonce := newNonce()
	_, sv, keys, ok := s.pageInvitation(w, r, nonce)
	if !ok {
		return
	}
	s.renderPage(w, http.StatusOK, questionPage(nonce, sv, keys, r.PathValue("token"), -1, "", ""))
}

func questionPage(nonce string, sv *surveySettings, keys link.Keys, token string, checked int, comment, problem string) pageData {
	lo, hi := sv.kind.Range()
	ends := scaleEnds[sv.kind]
	d := pageData{
		Nonce: nonce, Title: sv.invite.Question, Question: sv.invite.Question, FollowUp: sv.invite.FollowUpQuestion,
		Low: strconv.Itoa(lo) + " = " + ends[0], High: strconv.Itoa(hi) + " = " + ends[1],
		FormToken: formToken(keys.Current, token), Error: problem, Comment: comment, MaxLen: maxPageComment,
	}
	if d.Question == "" {
		d.Question, d.Title = "How would you rate your experience?", "Survey"
	}
	for v := lo; v <= hi; v++ {
		label := strconv.Itoa(v)
		switch v {
		case lo:
			label += ", " + ends[0]
		case hi:
			label += ", " + ends[1]
		}
		d.Scores = append(d.Scores, scoreOption{Value: v, Label: label, Checked: v == checked})
	}
	return d
}

func (s *Server) surveyAnswer(w http.ResponseWriter, r *http.Request) {
	nonce := newNonce()
	r.Body = http.MaxBytesReader(w, r.Body, maxPageBody)
	if err := r.ParseForm(); err != nil {
		s.renderPage(w, http.StatusRequestEntityTooLarge, pageData{Nonce: nonce, Title: "Your answer could not be read", Message: "Please go back and try again with a shorter comment."})
		return
	}
	inv, sv, keys, ok := s.pageInvitation(w, r, nonce)
	if !ok {
		return
	}
	token := r.PathValue("token")
	if !validFormToken(keys, token, r.PostForm.Get("form")) {
		s.renderPage(w, http.StatusForbidden, pageData{Nonce: nonce, Title: "Please answer from the survey page", Message: "Open the link from your message again and send your answer from there."})
		return
	}
	lo, hi := sv.kind.Range()
	comment := strings.TrimSpace(r.PostForm.Get("comment"))
	v, err := strconv.Atoi(r.PostForm.Get("score"))
	switch {
	case err != nil || v < lo || v > hi:
		s.renderPage(w, http.StatusBadRequest, questionPage(nonce, sv, keys, token, -1, comment, "Please choose a score from "+strconv.Itoa(lo)+" to "+strconv.Itoa(hi)+"."))
		return
	case utf8.RuneCountInString(comment) > maxPageComment:
		s.renderPage(w, http.StatusBadRequest, questionPage(nonce, sv, keys, token, v, comment, "Please shorten your comment to "+strconv.Itoa(maxPageComment)+" characters."))
		return
	}
	id, score := answerID(inv.ID), float64(v)
	in := responseIn{ID: &id, Survey: &inv.Survey, Customer: &inv.Customer, Score: &score, Comment: &comment}
	val := &validator{cfg: s.cfg.Load(), now: s.now(), authorized: func(name string) bool { return name == inv.Survey }, seen: map[string]int{},
		customerAsStored: true}
	rec, ierr := val.response(0, &in)
	if ierr != nil {
		s.renderPage(w, http.StatusBadRequest, questionPage(nonce, sv, keys, token, v, comment, "Your answer could not be stored: "+ierr.Reason))
		return
	}
	// A nil store is one being reopened (a full volume got room again):
	// the answer is not saved, as when the store refuses it.
	res, err := store.Result{}, errStoreReopening
	if st := s.storage(); st != nil {
		res, err = st.Submit(r.Context(), []store.Record{rec})
	}
	if errors.Is(err, store.ErrConflict) {
		// Answered before with another score or comment: the first
		// answer stands.
		s.renderPage(w, http.StatusOK, alreadyAnswered(nonce))
		return
	}
	if err != nil {
		w.Header().Set("Retry-After", "5")
		s.renderPage(w, http.StatusServiceUnavailable, pageData{Nonce: nonce, Title: "Your answer was not saved", Message: "Please go back and send it again in a moment."})
		return
	}
	if res.Duplicates > 0 {
		s.renderPage(w, http.StatusOK, alreadyAnswered(nonce))
		return
	}
	s.count(s.cfg.Load(), []store.Record{rec}, res)
	s.wakeSurveys([]store.Record{rec}, res)
	s.renderPage(w, http.StatusOK, pageData{Nonce: nonce, Title: "Thank you", Message: "Thank you for your answer."})
}

// renderPage writes a page with headers that keep it private and inert:
// no referrer leaves with the link's token, nothing but the page's own
// style runs, nothing frames it, nothing caches it.
func (s *Server) renderPage(w http.ResponseWriter, status int, d pageData) {
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Content-Security-Policy", "default-src 'none'; style-src 'nonce-"+d.Nonce+"'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	if err := pageTemplate.Execute(w, d); err != nil {
		s.log.Warn("survey page: render", "err", err)
	}
}

func newNonce() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return base64.RawStdEncoding.EncodeToString(b[:])
}

// formToken binds a form to its link, so that a form posted to another
// link's URL is refused.
func formToken(key []byte, token string) string {
	m := hmac.New(sha256.New, key)
	m.Write([]byte("cxop survey form\x00" + token))
	return hex.EncodeToString(m.Sum(nil))
}

func validFormToken(keys link.Keys, token, got string) bool {
	ok := false
	for _, k := range [][]byte{keys.Current, keys.Previous} {
		if len(k) > 0 && hmac.Equal([]byte(got), []byte(formToken(k, token))) {
			ok = true
		}
	}
	return ok
}
