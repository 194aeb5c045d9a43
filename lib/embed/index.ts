/**
 * Embedding inference and 1:1 decisions: {@link FaceEmbedder} (decode, align, normalize, batch, flip
 * TTA), face alignment to the ArcFace template, {@link verify}, {@link calibrateThreshold} and
 * {@link ScoreCalibration} (score → estimated false-match rate, saved next to a model).
 */
export {
  alignFace, similarityTransform, applyAffine, invertAffine, ARCFACE_TEMPLATE_112, AffineMatrix, AlignOptions, AlignedFace, Points,
} from './align';
export { FaceEmbedder, FaceEmbedderOptions, EmbedCallOptions, FaceEmbeddings, FaceImage } from './embedder';
export {
  verify, calibrateThreshold, ScoreCalibration, calibrationPath, nextUp, VerifyOptions, VerifyResult, CalibrateOptions, ThresholdCalibration,
  CalibrationFitOptions, ScoreCalibrationJSON, ScoreTailJSON,
} from './verify';
