package testpki_test

import (
	"crypto/tls"
	"net"
	"testing"

	"github.com/eastwest-gw/eastwest/internal/testpki"
)

// The client and server configs interoperate and verify each other's SPIFFE
// identities; a wrong identity is refused.
func TestMutualTLS(t *testing.T) {
	ca := testpki.NewCA(t)
	const srvID, cliID = "spiffe://cluster.local/ns/default/sa/reviews", "spiffe://cluster.local/ns/default/sa/productpage"
	for _, tc := range []struct {
		name    string
		want    string
		wantErr bool
	}{
		{"right identity", srvID, false},
		{"wrong identity", "spiffe://cluster.local/ns/default/sa/other", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, b := net.Pipe()
			defer a.Close()
			defer b.Close()
			srv := tls.Server(b, ca.ServerConfig(t, srvID))
			errc := make(chan error, 1)
			go func() { errc <- srv.Handshake() }()
			cli := tls.Client(a, ca.ClientConfig(t, cliID, "outbound_.9080_._.reviews.default.svc.cluster.local", tc.want))
			err := cli.Handshake()
			if (err != nil) != tc.wantErr {
				t.Fatalf("client handshake err = %v, want error %v", err, tc.wantErr)
			}
			a.Close()
			serr := <-errc
			if !tc.wantErr {
				if serr != nil {
					t.Fatalf("server handshake: %v", serr)
				}
				if got := srv.ConnectionState().PeerCertificates[0].URIs[0].String(); got != cliID {
					t.Fatalf("server saw client %s, want %s", got, cliID)
				}
			}
		})
	}
}
