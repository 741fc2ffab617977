"""CARLA 0.9.14+ semantic tags (the `CityObjectLabel` ids), shared by both backends so labels agree."""

UNLABELED = 0
ROAD = 1
SIDEWALK = 2
BUILDING = 3
WALL = 4
FENCE = 5
POLE = 6
TRAFFIC_LIGHT = 7
TRAFFIC_SIGN = 8
VEGETATION = 9
TERRAIN = 10
SKY = 11
PEDESTRIAN = 12
RIDER = 13
CAR = 14
TRUCK = 15
BUS = 16
TRAIN = 17
MOTORCYCLE = 18
BICYCLE = 19
STATIC = 20
DYNAMIC = 21
OTHER = 22
WATER = 23
ROADLINE = 24
GROUND = 25
BRIDGE = 26
RAIL_TRACK = 27
GUARD_RAIL = 28

#: id -> name, in CARLA's spelling.
TAG_NAMES = {
    0: "Unlabeled", 1: "Roads", 2: "SideWalks", 3: "Building", 4: "Wall", 5: "Fence", 6: "Pole",
    7: "TrafficLight", 8: "TrafficSign", 9: "Vegetation", 10: "Terrain", 11: "Sky", 12: "Pedestrian",
    13: "Rider", 14: "Car", 15: "Truck", 16: "Bus", 17: "Train", 18: "Motorcycle", 19: "Bicycle",
    20: "Static", 21: "Dynamic", 22: "Other", 23: "Water", 24: "RoadLine", 25: "Ground", 26: "Bridge",
    27: "RailTrack", 28: "GuardRail",
}
