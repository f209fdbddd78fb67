package webhook

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"strings"
	"syscall"
)

// Guard keeps outbound webhooks away from addresses inside the network the
// collector runs in: loopback, link-local (cloud metadata services),
// private and shared ranges (where pods and Services live), multicast,
// unspecified and the other special-purpose ranges, also when an IPv6
// transition form (NAT64, 6to4, Teredo) carries such an IPv4 address. It
// checks the address actually dialled, after name resolution, so neither a
// DNS name that resolves inside nor a redirect to an inside address gets
// through. Cloud metadata addresses are refused even for allowed hosts.
// Webhooks go over https unless AllowHTTP is set: a signed payload with a
// customer's contact in it is not sent in the clear.
type Guard struct {
	// AllowHosts are host names or IP addresses that may be reached even
	// though they resolve inside (an internal mailer, say).
	AllowHosts []string
	// AllowLoopback lets loopback addresses through, for a local
	// environment where the receiver runs on the same machine.
	AllowLoopback bool
	// AllowHTTP lets webhooks use plain http (a local environment, or a
	// receiver inside a network the operator trusts); by default only
	// https is sent.
	AllowHTTP bool
	// Deny adds ranges to refuse, such as a cluster's pod and Service
	// ranges when they are public addresses. Allowed hosts skip them (an
	// allowed in-cluster mailer lives in them).
	Deny []netip.Prefix
}

// SchemeError says why a webhook URL's scheme is refused.
type SchemeError struct{ URL, Scheme string }

func (e *SchemeError) Error() string {
	if e.Scheme == "http" {
		return fmt.Sprintf("webhook URL %s uses http; webhooks are sent over https only unless plain http is explicitly allowed", e.URL)
	}
	return fmt.Sprintf("webhook URL %s: scheme %q is not https", e.URL, e.Scheme)
}

// CheckURL refuses a webhook URL that is not https (or http when AllowHTTP
// is set), before anything is dialled.
func (g *Guard) CheckURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("webhook URL: %w", err)
	}
	switch scheme := strings.ToLower(u.Scheme); {
	case scheme == "https":
		return nil
	case scheme == "http" && g.AllowHTTP:
		return nil
	default:
		return &SchemeError{URL: u.Redacted(), Scheme: scheme}
	}
}

// ParseDenyCIDRs reads ranges to refuse such as "10.244.0.0/16", naming
// the one that does not parse. A bare address is taken as a single-address
// range.
func ParseDenyCIDRs(values []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, v := range values {
		v = strings.TrimSpace(v)
		if v == "" {
			continue
		}
		if !strings.Contains(v, "/") {
			a, err := netip.ParseAddr(v)
			if err != nil {
				return nil, fmt.Errorf("%q is neither a CIDR range such as 10.96.0.0/12 nor an IP address", v)
			}
			out = append(out, netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()))
			continue
		}
		p, err := netip.ParsePrefix(v)
		if err != nil {
			return nil, fmt.Errorf("%q is not a CIDR range such as 10.96.0.0/12: %w", v, err)
		}
		if p.Addr().Is4In6() && p.Bits() >= 96 {
			p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

// sharedRange is carrier-grade NAT (RFC 6598), often used for pods.
var sharedRange = netip.MustParsePrefix("100.64.0.0/10")

// specialRanges are the special-purpose ranges of RFC 6890 (and its IPv6
// registry) where no webhook receiver lives: a destination there is a
// mistake or an attempt to reach something that is not on the internet.
var specialRanges = []struct {
	prefix netip.Prefix
	why    string
}{
	{netip.MustParsePrefix("0.0.0.0/8"), "this-network"},
	{netip.MustParsePrefix("192.0.0.0/24"), "IETF protocol assignment"},
	{netip.MustParsePrefix("192.0.2.0/24"), "documentation"},
	{netip.MustParsePrefix("198.51.100.0/24"), "documentation"},
	{netip.MustParsePrefix("203.0.113.0/24"), "documentation"},
	{netip.MustParsePrefix("198.18.0.0/15"), "benchmarking"},
	{netip.MustParsePrefix("255.255.255.255/32"), "broadcast"},
	{netip.MustParsePrefix("240.0.0.0/4"), "reserved"},
	{netip.MustParsePrefix("2001:db8::/32"), "documentation"},
	{netip.MustParsePrefix("100::/64"), "discard-only"},
	{netip.MustParsePrefix("64:ff9b:1::/48"), "local-use NAT64"},
	{netip.MustParsePrefix("fec0::/10"), "site-local"},
}

// IPv6 forms that hand an embedded IPv4 address to a translator or relay:
// the IPv4 address is what is finally reached, so it is what is checked.
var (
	nat64Prefix  = netip.MustParsePrefix("64:ff9b::/96") // RFC 6052
	sixToFour    = netip.MustParsePrefix("2002::/16")    // RFC 3056
	teredo       = netip.MustParsePrefix("2001::/32")    // RFC 4380
	v4Compatible = netip.MustParsePrefix("::/96")        // deprecated, RFC 4291
)

// metadataAddrs are the cloud providers' instance metadata services, which
// hand out the node's credentials. No allow-list lets a webhook reach them.
var metadataAddrs = []netip.Addr{
	netip.MustParseAddr("169.254.169.254"), // AWS, GCP, Azure, OpenStack, Oracle
	netip.MustParseAddr("169.254.170.2"),   // AWS ECS task credentials
	netip.MustParseAddr("169.254.170.23"),  // AWS EKS Pod Identity
	netip.MustParseAddr("fd00:ec2::254"),   // AWS over IPv6
	netip.MustParseAddr("fd00:ec2::23"),    // AWS EKS Pod Identity over IPv6
	netip.MustParseAddr("100.100.100.200"), // Alibaba Cloud
}

func isMetadata(addr netip.Addr) bool {
	addr = addr.Unmap()
	for _, m := range metadataAddrs {
		if addr == m {
			return true
		}
	}
	return false
}

// embeddedIPv4 returns the IPv4 address an IPv6 transition form carries,
// and the form's name.
func embeddedIPv4(addr netip.Addr) (netip.Addr, string, bool) {
	if !addr.Is6() || addr.Is4In6() {
		return netip.Addr{}, "", false
	}
	b := addr.As16()
	switch {
	case nat64Prefix.Contains(addr):
		return netip.AddrFrom4([4]byte(b[12:16])), "NAT64", true
	case sixToFour.Contains(addr):
		return netip.AddrFrom4([4]byte(b[2:6])), "6to4", true
	case teredo.Contains(addr):
		// The client's address, obfuscated by inverting every bit.
		return netip.AddrFrom4([4]byte{^b[12], ^b[13], ^b[14], ^b[15]}), "Teredo", true
	case v4Compatible.Contains(addr) && !addr.IsUnspecified() && !addr.IsLoopback():
		return netip.AddrFrom4([4]byte(b[12:16])), "IPv4-compatible form", true
	}
	return netip.Addr{}, "", false
}

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
	if v4, form, ok := embeddedIPv4(addr); ok {
		if why := g.check(v4); why != "" {
			return fmt.Sprintf("%s (%s of %s)", why, form, v4)
		}
	}
	// Ranges denied explicitly come first: they win over AllowLoopback.
	for _, p := range g.Deny {
		if p.Contains(addr) {
			return "denied (in " + p.String() + ")"
		}
	}
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
	for _, r := range specialRanges {
		if r.prefix.Contains(addr) {
			return r.why
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
			h, _, err := net.SplitHostPort(resolved)
			if err != nil {
				return err
			}
			ip, err := netip.ParseAddr(h)
			if err != nil {
				return err
			}
			if isMetadata(ip) {
				return &BlockedError{Host: host, Addr: ip.Unmap(), Why: "cloud metadata"}
			}
			if allowed {
				return nil
			}
			if why := g.check(ip); why != "" {
				return &BlockedError{Host: host, Addr: ip.Unmap(), Why: why}
			}
			return nil
		},
	}
	return d.DialContext(ctx, network, address)
}
