package webhook

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"syscall"
)

// Guard keeps outbound webhooks away from addresses inside the network the
// collector runs in: loopback, link-local (cloud metadata services),
// private and shared ranges (where pods and Services live), multicast and
// unspecified addresses. It checks the address actually dialled, after
// name resolution, so neither a DNS name that resolves inside nor a
// redirect to an inside address gets through.
type Guard struct {
	// AllowHosts are host names or IP addresses that may be reached even
	// though they resolve inside (an internal mailer, say).
	AllowHosts []string
	// AllowLoopback lets loopback addresses through, for a local
	// environment where the receiver runs on the same machine.
	AllowLoopback bool
	// Deny adds ranges to refuse, such as a cluster's public pod range.
	Deny []netip.Prefix
}

// sharedRange is carrier-grade NAT (RFC 6598), often used for pods.
var sharedRange = netip.MustParsePrefix("100.64.0.0/10")

// BlockedError says why an address was refused.
type BlockedError struct {
	Host string
	Addr netip.Addr
	Why  string
}

func (e *BlockedError) Error() string {
	return fmt.Sprintf("webhook host %s resolves to %s, a %s address; outbound webhooks may not reach the internal network (allow the host explicitly if it is meant to)", e.Host, e.Addr, e.Why)
}

// check returns why addr may not be dialled for host, or "".
func (g *Guard) check(addr netip.Addr) string {
	addr = addr.Unmap()
	switch {
	case addr.IsLoopback():
		if g.AllowLoopback {
			return ""
		}
		return "loopback"
	case addr.IsUnspecified():
		return "unspecified"
	case addr.IsLinkLocalUnicast(), addr.IsLinkLocalMulticast():
		return "link-local"
	case addr.IsPrivate():
		return "private"
	case sharedRange.Contains(addr):
		return "shared (carrier-grade NAT)"
	case addr.IsMulticast(), addr.IsInterfaceLocalMulticast():
		return "multicast"
	}
	for _, p := range g.Deny {
		if p.Contains(addr) {
			return "denied"
		}
	}
	return ""
}

func (g *Guard) allowedHost(host string) bool {
	for _, h := range g.AllowHosts {
		if strings.EqualFold(h, host) {
			return true
		}
	}
	return false
}

// DialContext dials like net.Dialer but refuses inside addresses. The
// check runs on the resolved address of every connection, redirects
// included.
func (g *Guard) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	host, _, err := net.SplitHostPort(address)
	if err != nil {
		return nil, err
	}
	allowed := g.allowedHost(host)
	d := &net.Dialer{
		Control: func(_, resolved string, _ syscall.RawConn) error {
			if allowed {
				return nil
			}
			h, _, err := net.SplitHostPort(resolved)
			if err != nil {
				return err
			}
			ip, err := netip.ParseAddr(h)
			if err != nil {
				return err
			}
			if why := g.check(ip); why != "" {
				return &BlockedError{Host: host, Addr: ip.Unmap(), Why: why}
			}
			return nil
		},
	}
	return d.DialContext(ctx, network, address)
}
