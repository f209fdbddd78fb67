package webhook

import (
	"net/netip"
	"testing"
)

// FuzzGuard feeds arbitrary IPv4 and IPv6 addresses to the guard's check
// (the corpus is in testdata/fuzz/FuzzGuard). It never panics; an address
// of the internal network is always refused, as is its IPv4-mapped form
// and every NAT64, 6to4 and Teredo form that carries a refused IPv4
// address; and the cloud metadata addresses are always refused.
func FuzzGuard(f *testing.F) {
	for _, seed := range []string{
		"127.0.0.1", "10.1.2.3", "169.254.169.254", "100.100.100.200", "192.168.1.1", "172.16.0.1",
		"100.64.0.1", "198.18.0.1", "240.0.0.1", "255.255.255.255", "0.0.0.0", "224.0.0.1", "8.8.8.8",
		"::1", "::", "fe80::1", "fc00::1", "fd00:ec2::254", "ff02::1", "2001:db8::1", "2606:4700::1111",
		"64:ff9b::a9fe:a9fe", "64:ff9b::808:808", "2002:a9fe:a9fe::1", "2002:808:808::1",
		"2001:0:4136:e378:8000:63bf:3fff:fdd2", "2001:0:4136:e378:8000:63bf:f5fe:fefe", "::ffff:127.0.0.1", "::7f00:1",
	} {
		f.Add(netip.MustParseAddr(seed).AsSlice())
	}
	g := &Guard{}
	f.Fuzz(func(t *testing.T, raw []byte) {
		addr, ok := netip.AddrFromSlice(raw)
		if !ok {
			return
		}
		why := g.check(addr)
		internal := addr.IsLoopback() || addr.IsPrivate() || addr.IsLinkLocalUnicast() || addr.IsLinkLocalMulticast() ||
			addr.IsMulticast() || addr.IsInterfaceLocalMulticast() || addr.IsUnspecified()
		if internal && why == "" {
			t.Fatalf("%s is internal but passes", addr)
		}
		if isMetadata(addr) && why == "" {
			t.Fatalf("%s is a cloud metadata address but passes", addr)
		}
		if addr.Is4() {
			mapped := netip.AddrFrom16(addr.As16())
			if (g.check(mapped) == "") != (why == "") {
				t.Fatalf("%s: %q, its mapped form %s: %q", addr, why, mapped, g.check(mapped))
			}
			if why == "" {
				return
			}
			// Every IPv6 form that hands this address to a translator or
			// relay is refused too.
			v4 := addr.As4()
			var nat64, sixToFour, teredo [16]byte
			copy(nat64[:], netip.MustParseAddr("64:ff9b::").AsSlice())
			copy(nat64[12:], v4[:])
			sixToFour[0], sixToFour[1] = 0x20, 0x02
			copy(sixToFour[2:6], v4[:])
			sixToFour[15] = 1
			teredo[0], teredo[1] = 0x20, 0x01
			for i := range 4 {
				teredo[12+i] = ^v4[i]
			}
			for name, form := range map[string][16]byte{"NAT64": nat64, "6to4": sixToFour, "Teredo": teredo} {
				if a := netip.AddrFrom16(form); g.check(a) == "" {
					t.Fatalf("%s is refused (%s) but its %s form %s passes", addr, why, name, a)
				}
			}
		}
	})
}
