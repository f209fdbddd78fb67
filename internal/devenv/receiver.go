package devenv

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/spf13/cobra"
	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"
)

// NewReceiverCommand returns `cxop dev webhook-receiver`: a stand-in for a
// mailer or a ticket system on a laptop. It verifies each webhook's
// signature and prints it, so the survey tour can show an invitation and a
// detractor arriving.
func NewReceiverCommand() *cobra.Command {
	var listen, secret string
	cmd := &cobra.Command{
		Use:   "webhook-receiver",
		Short: "Receive signed survey webhooks on this machine and print them",
		Long: `webhook-receiver listens for the survey invitations and detractor alerts a
collector sends, checks each Standard Webhooks signature against --secret,
and prints one JSON line per webhook: its id, whether it verified, and its
body. A webhook that does not verify is answered 401.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			l, err := net.Listen("tcp", listen)
			if err != nil {
				return fmt.Errorf("--listen: %w", err)
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "receiving webhooks on http://%s\n", l.Addr())
			return ServeReceiver(cmd.Context(), l, secret, cmd.OutOrStdout())
		},
	}
	cmd.Flags().StringVar(&listen, "listen", "127.0.0.1:9000", "address to listen on")
	cmd.Flags().StringVar(&secret, "secret", "", `the signing secret, as in the Survey's Secret ("whsec_" and base64)`)
	_ = cmd.MarkFlagRequired("secret")
	return cmd
}

// ServeReceiver serves the receiver on l until ctx ends, writing one JSON
// line per webhook to out.
func ServeReceiver(ctx context.Context, l net.Listener, secret string, out io.Writer) error {
	verifier, err := standardwebhooks.NewWebhook(secret)
	if err != nil {
		return fmt.Errorf("--secret: %w", err)
	}
	var mu sync.Mutex
	srv := &http.Server{
		ReadHeaderTimeout: 5 * time.Second,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
			if err != nil {
				http.Error(w, "read body", http.StatusBadRequest)
				return
			}
			verr := verifier.Verify(body, r.Header)
			line := struct {
				ID       string          `json:"webhookId"`
				Path     string          `json:"path"`
				Verified bool            `json:"verified"`
				Error    string          `json:"error,omitempty"`
				Body     json.RawMessage `json:"body"`
			}{ID: r.Header.Get("webhook-id"), Path: r.URL.Path, Verified: verr == nil, Body: body}
			if verr != nil {
				line.Error = verr.Error()
			}
			if !json.Valid(body) {
				line.Body = nil
			}
			data, _ := json.Marshal(line)
			mu.Lock()
			fmt.Fprintln(out, string(data))
			mu.Unlock()
			if verr != nil {
				http.Error(w, "signature does not verify", http.StatusUnauthorized)
				return
			}
			w.WriteHeader(http.StatusNoContent)
		}),
	}
	go func() {
		<-ctx.Done()
		shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(shutdown)
	}()
	if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
