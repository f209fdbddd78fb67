// Package controllers holds one reconciler per cxop kind (Journey,
// Touchpoint, Survey, CXTarget) and the helpers they share.
//
// Each kind has three files: <kind>_controller.go (the reconciler type, RBAC
// markers and a short Reconcile that drives ordered phases),
// <kind>_setup.go (SetupWithManager: watches, predicates, field indexes) and
// <kind>_status.go (pure functions that turn what a reconcile observed into
// status and conditions, table-tested without a cluster).
package controllers
