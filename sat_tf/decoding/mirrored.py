"""Test-time mirroring: a captioner decodes the photo and its horizontal mirror image as one model.

At every step the next-word distributions computed from the photo's annotations and from the mirrored photo's are
averaged (an ensemble of the model with itself over two views, `sat_tf.decoding.ensemble`), the test-time
augmentation of image classifiers applied to captioning. Mirroring keeps what a caption says about a photo except
"left"/"right" (162 of Flickr8k's 35,000 captions use either word), so both views are evidence for the same words.

The annotations of the mirrored photo come from the encoder on the mirrored pixels (feature shards extracted with
mirrored views, `python -m sat_tf.pipelines.extract --mirrored`), not from reversing the columns of the feature
grid: a CNN's channels are not mirror-symmetric.

Shapes: B images, L locations, D depth, I inputs of the wrapped captioner.
"""

from __future__ import annotations

from sat_tf.decoding.ensemble import CaptionEnsemble


def with_mirrored_views(captioner) -> CaptionEnsemble:
    """The captioner (a Captioner or a CaptionEnsemble) reading 2I inputs: its I inputs of the photo, then the same
    I inputs of the mirrored photo.

    Every member appears twice, once per view, with its weights shared; a CaptionEnsemble keeps its combination
    rule. Call the result with `mirrored_inputs(photo, mirrored)`. The attention maps it records are those of the
    photo (input 0), so figures stay in the photo's frame; hard attention's locations are not returned.
    """
    if isinstance(captioner, CaptionEnsemble):
        members, names, inputs, combine = captioner.members, captioner.names, captioner.inputs, captioner.combine
    else:
        members, names, inputs, combine = [captioner], ["model"], [0], "probability"
    count = max(inputs) + 1
    return CaptionEnsemble(list(members) * 2, combine=combine,
                           names=list(names) + [f"{name} (mirrored)" for name in names],
                           inputs=list(inputs) + [i + count for i in inputs])


def mirrored_inputs(photo, mirrored) -> tuple:
    """The inputs of `with_mirrored_views(captioner)`: photo and mirrored are each a (B, L, D) tensor or a tuple of
    I of them (one per encoder, as the wrapped captioner reads them)."""
    photo = tuple(photo) if isinstance(photo, (tuple, list)) else (photo,)
    mirrored = tuple(mirrored) if isinstance(mirrored, (tuple, list)) else (mirrored,)
    if len(photo) != len(mirrored):
        raise ValueError(f"{len(photo)} photo inputs but {len(mirrored)} mirrored inputs")
    return photo + mirrored
