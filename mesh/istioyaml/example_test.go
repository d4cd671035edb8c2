package istioyaml_test

import (
	"context"
	"fmt"

	"github.com/eastwest-gw/eastwest/mesh/istioyaml"
)

func ExampleLoadBytes() {
	const config = `
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ratings, namespace: default}
spec:
  hosts: [ratings.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 9080, name: tcp, protocol: TCP}]
  endpoints:
  - {address: 127.0.0.1, ports: {tcp: 19091}, serviceAccount: bookinfo-ratings, network: network2}
  - {address: 127.0.0.2, ports: {tcp: 19091}, network: network2}
`
	res, err := istioyaml.LoadBytes(context.Background(), "mesh.yaml", []byte(config), istioyaml.Options{Network: "network2"})
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, c := range res.Snapshot.Clusters() {
		fmt.Println(c.Name, c.Endpoints[0].Addr, len(c.Endpoints))
	}
	for _, w := range res.Warnings {
		fmt.Println(w)
	}
	// Output:
	// outbound_.9080_._.ratings.default.svc.cluster.local 127.0.0.1:19091 1
	// mesh.yaml: ServiceEntry default/ratings: 1 endpoint(s) dropped: not mTLS-capable (neither serviceAccount nor label security.istio.io/tlsMode=istio)
}
