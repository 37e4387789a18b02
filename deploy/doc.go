// Package deploy holds stepgate's deployment artefacts (the kustomize base and
// overlay, the Helm chart) and the tests that keep them honest: every rendered
// object is decoded strictly into Kubernetes API types, and the security
// properties a sidecar gateway depends on are asserted on the result.
//
// It is its own Go module so that Kubernetes, kustomize and Helm never become
// dependencies of the stepgate binary. It must never contain product code.
package deploy
