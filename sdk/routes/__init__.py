"""Long routes: chains of generated scenes along a drive (outpainting) and sensors that render across their seams.

* `placement` — boxes along a trajectory (scene-to-world transforms, seam planes).
* `outpaint` — `generate_route`: the first scene sampled, each next one outpainted from the overlap with its
  predecessor (masked diffusion of c and f, g shared), optionally under the route's BEV map; resumable.
* `transfer` — grids moved between box frames (the known latents; a box's part of a route map).
* `feather` — each new scene's field cross-faded into its predecessor's over the overlap.
* `neural_route` — `NeuralRoute`: the chain of fields with their transforms, saved and loaded as one folder.
* `composite`, `sensors`, `lidar`, `seams` — rendering the union of the scenes' cells (exact front-to-back
  compositing), trajectory sensors and LiDAR over a route, and the seam-consistency measures.
"""
