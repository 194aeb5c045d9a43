/**
 * Evaluation: the verification protocol of arcface_torch on `.bin` packs (SPEC §10.1–10.2), IJB-B/C
 * 1:1 template verification (§10.3), ROC analysis and offline reports.
 */
export type { EmbedderLike, EmbedResult, IjbEmbedderLike } from './embedder';
export {
  evaluateVerification, loadVerificationBin, verificationMetrics, verificationMetricsFromDistances,
  type EvaluateVerificationOptions, type GroupAtThreshold, type GroupMetrics, type PairMetrics,
  type VerificationEvaluation, type VerificationMetrics, type VerificationMetricsOptions,
} from './verification';
export {
  FAR_TARGETS, rocFromSorted, rocMetrics, splitSorted, tarAtFarPoint,
  type FarKey, type RocCurve, type RocMetrics, type ScoreHistogram, type TarAtFarPoint,
} from './roc';
export {
  evaluateIjb, ijbMetrics, ijbPairScores, IjbAggregator, readIjbFaces, readIjbLandmarks, readIjbPairs,
  type EvaluateIjbOptions, type IjbAggregationOptions, type IjbFaces, type IjbLandmarks, type IjbPairs, type IjbResult,
} from './ijb';
export {
  formatIjbTable, formatVerificationTable, pyFixed, renderReportHtml, reportJson, writeReport,
  type ReportEntry, type ReportOptions,
} from './report';
