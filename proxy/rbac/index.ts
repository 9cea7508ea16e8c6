// The RBAC evaluator of the L7 proxy: Envoy v3 RBAC filter configs in, Decisions out.
// Semantics and the choices made where sockmesh cannot do what Envoy does: README.md.
export { compileRbacFilters, HTTP_RBAC_FILTER, HTTP_RBAC_TYPE, NETWORK_RBAC_FILTER, NETWORK_RBAC_TYPE } from './engine';
export type { CompileOptions, FilterSummary, RbacAction, RbacEvaluator } from './engine';
export { isRbacConfigError, RbacConfigError, warningText } from './errors';
export type { RbacIssue, RbacWarning } from './errors';
export { loadRbacFilterFile, runAuthzCheckCli, AUTHZ_CHECK_USAGE } from './cli';
export type { AuthzCliIo } from './cli';
