"""Training objectives of the Shapes lab's models: small pure functions, one per idea, citing the
paper each follows."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from pipelines.schedulers import check_prediction_type, clean_image_from_v


def contrastive_loss(
    image_features: torch.Tensor, text_features: torch.Tensor, log_scale: torch.Tensor
) -> torch.Tensor:
    """Symmetric InfoNCE over a batch of matching (image, text) pairs (Radford et al. 2021, CLIP);
    the temperature is clamped at 100 as in CLIP."""
    image_features = F.normalize(image_features, dim=-1)  # (B, D)
    text_features = F.normalize(text_features, dim=-1)  # (B, D)
    logits = log_scale.clamp(max=math.log(100)).exp() * image_features @ text_features.T  # (B, B)
    labels = torch.arange(len(logits), device=logits.device)
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2


def retrieval_accuracy(image_features: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
    """Share of images whose own caption is the nearest in the batch (a readable training signal)."""
    similarity = F.normalize(image_features, dim=-1) @ F.normalize(text_features, dim=-1).T
    return (similarity.argmax(dim=1) == torch.arange(len(similarity), device=similarity.device)).float().mean()


def foreground_weights(
    images: torch.Tensor, weight: float, background: float = -1.0, threshold: float = 0.05
) -> torch.Tensor:
    """(B, 1, H, W): `weight` on pixels that differ from the background, 1 elsewhere. Objects cover
    12% of the pixels of training scenes, so an unweighted autoencoder loss is mostly background and the
    tiny VAE lost colours (see lab/README.md, "The VAE's objective")."""
    return 1 + (weight - 1) * ((images - background).abs().amax(1, keepdim=True) > threshold).float()


def reconstruction_loss(reconstruction: torch.Tensor, images: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Weighted mean of L1 + L2 per element: L1 keeps flat colours and sharp edges (SD's autoencoder),
    L2 pulls hardest on the largest errors, a wrong or missing object."""
    error = reconstruction - images
    weights = weights.expand_as(error)
    return ((error.abs() + error**2) * weights).sum() / weights.sum()


def broadcast(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(B,) per-sample values -> (B, 1, ..., 1), to scale a batch shaped like `like`."""
    return values.reshape(-1, *([1] * (like.dim() - 1)))


def alpha_bar(alphas_cumprod: torch.Tensor, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """a_t of each sample's timestep, shaped to scale a batch like `like`."""
    return broadcast(alphas_cumprod.to(like.device)[t], like)


def q_sample(x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor, alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """x_t = sqrt(a_t) x_0 + sqrt(1 - a_t) eps (Ho et al. 2020, DDPM, eq. 4)."""
    a = alpha_bar(alphas_cumprod, t, x0)
    return a.sqrt() * x0 + (1 - a).sqrt() * noise


def snr(alphas_cumprod: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Signal-to-noise ratio a_t / (1 - a_t) of timesteps t (B,) (Kingma et al. 2021, VDM)."""
    a = alphas_cumprod.to(t.device)[t]
    return a / (1 - a)


def truncated_snr_weight(snr_t: torch.Tensor) -> torch.Tensor:
    """max(SNR, 1): the weight of a clean-image (x0) error that equals the noise loss wherever
    SNR >= 1 and never lets a noisy step's error count less than the image's own (Salimans & Ho
    2022, progressive distillation, sec. 4). Under the noise loss, an x0 error at t = 950 of the
    cosine schedule weighs SNR = 0.006 (what that did to the lab's models: lab/README.md, "What the
    denoisers predict")."""
    return snr_t.clamp(min=1.0)


def x0_from_eps(eps: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor, alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """The clean image implied by a noise prediction: inverts q_sample."""
    a = alpha_bar(alphas_cumprod, t, x_t)
    return (x_t - (1 - a).sqrt() * eps) / a.sqrt()


def denoising_loss(
    pred: torch.Tensor,
    x0: torch.Tensor,
    noise: torch.Tensor,
    x_t: torch.Tensor,
    t: torch.Tensor,
    alphas_cumprod: torch.Tensor,
    prediction_type: str,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(L_simple, the clean image the prediction implies). "epsilon": the noise MSE (DDPM);
    "sample": the clean-image MSE weighted max(SNR, 1) (truncated_snr_weight); "v_prediction": the MSE
    of v = sqrt(a) eps - sqrt(1 - a) x0 (Salimans & Ho 2022, SD 2), a clean-image error weighted SNR + 1."""
    check_prediction_type(prediction_type)
    if prediction_type == "sample":
        weights = broadcast(truncated_snr_weight(snr(alphas_cumprod, t)), x0)
        return (weights * (pred - x0) ** 2).mean(), pred
    if prediction_type == "epsilon":
        return F.mse_loss(pred, noise), x0_from_eps(pred, x_t, t, alphas_cumprod)
    a = alpha_bar(alphas_cumprod, t, x0)  # "v_prediction"
    v = a.sqrt() * noise - (1 - a).sqrt() * x0
    return F.mse_loss(pred, v), clean_image_from_v(pred, x_t, a)


def normal_kl(mean1: torch.Tensor, logvar1: torch.Tensor, mean2: torch.Tensor, logvar2: torch.Tensor) -> torch.Tensor:
    """KL(N(mean1, e^logvar1) || N(mean2, e^logvar2)), elementwise, in nats."""
    return 0.5 * (-1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 * torch.exp(-logvar2))


def discretized_gaussian_log_likelihood(x: torch.Tensor, mean: torch.Tensor, log_scale: torch.Tensor) -> torch.Tensor:
    """log p(x) of 8-bit images in [-1, 1] under a Gaussian integrated over each pixel's bin (DDPM's L_0)."""
    centred, inv_std = x - mean, torch.exp(-log_scale)
    cdf_plus = torch.special.ndtr(inv_std * (centred + 1 / 255))
    cdf_min = torch.special.ndtr(inv_std * (centred - 1 / 255))
    log_cdf_plus = cdf_plus.clamp(min=1e-12).log()  # the lowest bin takes all mass below it
    log_one_minus_cdf_min = (1 - cdf_min).clamp(min=1e-12).log()  # the highest, all mass above
    log_delta = (cdf_plus - cdf_min).clamp(min=1e-12).log()
    return torch.where(x < -0.999, log_cdf_plus, torch.where(x > 0.999, log_one_minus_cdf_min, log_delta))


def hybrid_vlb_term(
    x0_pred: torch.Tensor,
    variance: torch.Tensor,
    x0: torch.Tensor,
    x_t: torch.Tensor,
    t: torch.Tensor,
    alphas_cumprod: torch.Tensor,
) -> torch.Tensor:
    """The variational-bound term L_t of Nichol & Dhariwal 2021 (improved DDPM, eq. 16), per sample,
    in bits per dimension, for a model whose output implies the clean image `x0_pred` (as
    `denoising_loss` returns it) and a variance interpolation `variance` in [-1, 1].

    The model's log variance is frac * log(beta_t) + (1 - frac) * log(beta~_t), frac = (variance + 1) / 2:
    the "learned_range" that diffusers' UnCLIPScheduler samples with. The mean is built from
    `x0_pred.detach()`, so this term trains the variance only and L_simple the mean (the paper's stop
    gradient). L_hybrid = L_simple + lambda * L_vlb with lambda = 0.001, and the paper's code
    estimates L_vlb by T * L_t with a uniform t, so with T = 1000 the weight of this term is 1.
    t = 0 uses the discretized decoder likelihood L_0.
    """
    ac = alphas_cumprod.to(x0.device)
    ac_prev = torch.cat([ac.new_ones(1), ac[:-1]])
    a, a_prev = broadcast(ac[t], x0), broadcast(ac_prev[t], x0)
    beta = 1 - a / a_prev
    posterior_var = beta * (1 - a_prev) / (1 - a)
    # beta~_0 = 0: improved DDPM clips the log to beta~_1 (diffusers clamps at 1e-20; no noise is added at t = 0)
    beta_1_tilde = (1 - ac[1] / ac[0]) * (1 - ac[0]) / (1 - ac[1])
    min_log = torch.where(broadcast(t, x0) == 0, beta_1_tilde.log(), posterior_var.clamp(min=1e-20).log())
    frac = (variance + 1) / 2
    model_logvar = frac * beta.log() + (1 - frac) * min_log

    def mean_from(x0_: torch.Tensor) -> torch.Tensor:  # posterior mean of q(x_{t-1} | x_t, x_0), DDPM eq. 7
        return (a_prev.sqrt() * beta / (1 - a)) * x0_ + ((1 - beta).sqrt() * (1 - a_prev) / (1 - a)) * x_t

    true_mean, model_mean = mean_from(x0), mean_from(x0_pred.detach())
    kl = normal_kl(true_mean, min_log, model_mean, model_logvar).flatten(1).mean(1)
    nll = -discretized_gaussian_log_likelihood(x0, model_mean, 0.5 * model_logvar).flatten(1).mean(1)
    return torch.where(t == 0, nll, kl) / math.log(2.0)
