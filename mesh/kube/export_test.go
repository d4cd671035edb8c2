package kube

import "time"

// SetCRDPoll shortens how often s checks for the DestinationRule CRD; call
// it before Run.
func SetCRDPoll(s *Source, d time.Duration) { s.crdPoll = d }
